# report.jq — bench/out/results.json -> the markdown tables (jq -r).

def fmt(n): if . == null then "n/a" else
    (. * pow(10; n) | round / pow(10; n)) | tostring end;
def ms: if . == null then "n/a" elif . >= 100 then "\(fmt(0)) ms"
    elif . >= 1 then "\(fmt(2)) ms" else "\(. * 1000 | fmt(0)) µs" end;
def mib: if . == null then "n/a" else "\(. / 1024 | fmt(1)) MiB" end;
def kib: if . == null then "n/a" else "\(. / 1024 | fmt(1)) KiB" end;
def goal(ok): if ok then "met" else "**missed**" end;
def loads: if . == null then "" else map(select(. != null) | split(" ")[0]) | join(", ") end;

. as $r
| [
  "### Machine",
  "",
  "\(.machine.nproc) cores (\(.machine.cpu)), \(.machine.memory), \(.machine.kernel), PostgreSQL \(.machine.postgresql); commit \(.machine.commit) (\(.machine.src_files_changed) uncommitted files under src/ include/), \(.machine.date), load average at start \(.machine.loadavg_at_start), at end \(.machine.loadavg_at_end // "n/a") (client, poold and PostgreSQL share these cores; a load above 2 means other work shared them too). Suite took \(.seconds) s; \(.runs) runs of the seed's workloads, \(.load.org1.runs // 0) of each saturation case.",
  "",
  "### Goals (issue 22), this run",
  "",
  "Every ratio is taken within this run: poold against pgbench `-M prepared` (each connection parses and plans once: PostgreSQL's strongest configuration for a repeated statement) doing the same INSERT … ON CONFLICT DO NOTHING on the same PostgreSQL, and against goref (Go net/http + pgxpool, ../shared/peers/goref) with the same wrk script; median of the runs, [min–max]. CPU from /proc (utime + stime of every thread, before and after the run) ÷ the requests answered. Load: the 1-minute load average at the end of each poold run (2 cores: above ≈ 3, other work shared them and every figure is noisy).",
  "",
  "| Figure | Goal | Measured | | Load |",
  "|---|---|---|---|---|",
  ([["org1", "1 org, 8 connections: poold req/s ÷ pgbench tps, single-row INSERT, 8 clients", 1.0],
    ["orgs64", "10 orgs, 64 connections: poold messages/s ÷ pgbench single-row tps, 64 clients", 1.0],
    ["batch100", "POST /process/batch of 100, 8 connections: rows/s ÷ pgbench 100-row INSERT rows/s, 8 clients", 0.8]][]
   as [$k, $title, $g]
   | $r.load[$k] // null | if . == null then empty
     elif .missing then "| \($title) | ≥ \($g) | \(.missing)\(if .anchor_rows_per_s then "; pgbench: \(.anchor_rows_per_s) rows/s" else "" end) | n/a | |"
     else "| \($title) | ≥ \($g) | \(.ratio) [\(.ratio_min)–\(.ratio_max)] (\(.poold_messages_per_s) ÷ \(.anchor_rows_per_s)) | \(goal(.ratio >= $g)) | \(.loadavg | loads) |" end),
  ([["org1", 8], ["orgs64", 64]][] as [$k, $c]
   | ($r.goref[$k] // null) as $g | ($r.load[$k] // null) as $l
   | if $g == null or $l == null or $l.missing then empty
     elif $g.runs == 0 then "| poold ÷ goref, \($c) connections | ≥ 1.5 | n/a: no pair of runs | n/a | |"
     else "| poold ÷ goref, \($c) connections (req/s) | ≥ 1.5 | \($g.ratio) [\($g.ratio_min)–\($g.ratio_max)] (\($l.poold_messages_per_s) ÷ \($g.goref_messages_per_s)) | \(goal($g.ratio >= 1.5)) | \($g.loadavg | loads) |" end),
  ([["org1", 8], ["orgs64", 64]][] as [$k, $c]
   | ($r.load[$k] // null) | if . == null or .missing or .cpu_us_per_message == null then empty else
     "| poold's own CPU per request, \($c) connections, saturated | ≤ 40 µs | \(.cpu_us_per_message.server_s) µs (user \(.cpu_us_per_message.server_user_s) + kernel \(.cpu_us_per_message.server_sys_s)) | \(goal(.cpu_us_per_message.server_s <= 40)) | \(.loadavg | loads) |" end),
  (.rate // null | if . == null then empty else
    "| fixed rate \(.target_rps | fmt(0)) req/s (half of poold's 1-org max): poold p99 ÷ pgbench -R p99, each side's median run | ≤ 1.0 | \(.ratio_p99) (\(.poold.latency.p99_ms | ms) ÷ \(.pgbench.p99_ms | ms); runs: poold \(.poold_p99_all // [] | map(ms) | join(", ")), pgbench \(.pgbench_p99_all // [] | map(ms) | join(", "))) | \(goal(.ratio_p99 <= 1.0)) | \([.poold.loadavg] | loads) |" end),
  (.exhaust // null | if . == null then empty else
    "| pool 1, POOLD_PROCESS_COST_MS=300, \(.requests) at once: 503s are `pool_exhausted` within the acquire timeout (\(.acquire_timeout_ms) ms) + 0.5 s | all | \(.in_time) of \(.s503) 503s (\(.ok) × 200, \(.other) other; slowest 503 \(.max_503_s // 0 | fmt(2)) s; answers \(.errors | tojson)) | \(goal(.met)) | \([.loadavg] | loads) |" end),
  (.seed_batch[] | select(.cost == "scram" and .phase == "cold") |
    "| (issue 9) seed \(.workload) (\(.volume)), SCRAM over TCP, lazy services: pooled vs POOLD_POOL_MODE=none | ≥ 10× | \(.speedup)× [\(.speedup_min)–\(.speedup_max)] | \(goal(.speedup >= 10)) | |"),
  (.seed_single[] | select(.cost == "scram") |
    "| (issue 9) seed single request, SCRAM over TCP: pooled vs none (mean) | ≥ 25× | \(.mean_ratio)× [\(.ratio_min)–\(.ratio_max)] | \(goal(.mean_ratio >= 25)) | |"),
  "| every 200 has its row (rows counted after every poold and goref measurement) | all | \(.rows_checks.checks - (.rows_checks.failed | length)) of \(.rows_checks.checks) checks | \(goal((.rows_checks.failed | length) == 0)) | |",
  "",
  (if ([.goref[]? | select(. != null)] | length) == 0 and ([.load.org1, .load.orgs64 | select(. != null)] | length) == 0 then empty else
  "### poold, goref and pgbench: rate and CPU per request",
  "",
  "Same database, same wrk script (bench/post.lua, unique ids), fresh servers, run in alternating order; pgbench -M prepared with as many clients as wrk has connections. CPU µs per request (per row for pgbench), from /proc: the server process (every thread, user + kernel), every PostgreSQL process (the postmaster, its live children and the reaped ones), the load generator (wrk or pgbench, from the shell's `times`).",
  "",
  "![req/s and CPU µs per request: poold, goref, pgbench](benchmarks-anchors.svg)",
  "",
  "| Case | Who (settings) | req/s (runs) | p50 / p99 | non-200 | rows | server µs (user + kernel) | PostgreSQL µs | client µs | total µs |",
  "|---|---|---|---|---|---|---|---|---|---|",
  ([["org1", "1 org, 8 connections"], ["orgs64", "10 orgs, 64 connections"]][] as [$k, $title]
   | ($r.load[$k] // null) as $l | ($r.goref[$k] // null) as $g
   | if $l == null or $l.missing then empty else
     "| \($title) | poold (\($l.settings); services built \($l.services_built), evicted \($l.services_evicted)) | \($l.poold_messages_per_s) (\($l.poold_all | map(tostring) | join(", "))) | \($l.p50_ms | ms) / \($l.p99_ms | ms) | \($l.non200) | \(if $l.rows_ok then "ok" else "**FAILED**" end) | \($l.cpu_us_per_message.server_s) (\($l.cpu_us_per_message.server_user_s) + \($l.cpu_us_per_message.server_sys_s)) | \($l.cpu_us_per_message.postgres_s) | \($l.cpu_us_per_message.client_s) | \($l.cpu_us_per_message | .server_s + .postgres_s + .client_s | fmt(1)) |",
     (if $g == null then empty else
     "| \($title) | goref (\($g.settings)) | \($g.goref_messages_per_s) (\($g.goref_all | map(tostring) | join(", "))) | \($g.p50_ms | ms) / \($g.p99_ms | ms) | \($g.non200) | \(if $g.rows_ok then "ok" else "**FAILED**" end) | \($g.cpu_us_per_message.server_s) (\($g.cpu_us_per_message.server_user_s) + \($g.cpu_us_per_message.server_sys_s)) | \($g.cpu_us_per_message.postgres_s) | \($g.cpu_us_per_message.client_s) | \($g.cpu_us_per_message | .server_s + .postgres_s + .client_s | fmt(1)) |" end),
     "| \($title) | pgbench -M prepared -c \($l.anchor_clients) | \($l.anchor_rows_per_s) (\($l.anchor_all | map(tostring) | join(", "))) | \($l.anchor_latency_avg_ms | ms) (mean) | \($l.anchor_failed) failed | | | \($l.anchor_cpu_us_per_row.postgres_s) | \($l.anchor_cpu_us_per_row.client_s) | \($l.anchor_cpu_us_per_row | .postgres_s + .client_s | fmt(1)) |"
     end),
  "" end),
  (if .load == null or ([.load[] | select(. != null)] | length) == 0 then empty else
  "### poold against pgbench -M prepared",
  "",
  "pgbench: `pgbench -n -M prepared -j 2 -c <clients> -T \(.ceil_s)`, bench/pgbench_insert1.sql (single row) or bench/pgbench_insert100.sql (100 rows per transaction). poold: a warm-up of 2 s, the table truncated, then `wrk -t2 -c<connections>` with bench/post.lua (POST /process) or bench/batch.lua (POST /process/batch, 100 messages); messages/s = 200 answers × messages per request (minus per-message errors) ÷ the run's seconds. The anchor ran right before poold in each run. CPU per message from /proc: client, poold user + kernel, the PostgreSQL cluster. Rows: `processed_messages` counted after the run; the check passes when every 200 has its row and at most the requests in flight when wrk stopped add more.",
  "",
  "| Case | pgbench rows/s (runs) | poold messages/s (runs) | ratio [min–max] | poold p50 / p99 | non-200 | rows check | CPU µs/message: client · poold (user + kernel) · PostgreSQL | pgbench CPU µs/row: client · PostgreSQL |",
  "|---|---|---|---|---|---|---|---|---|",
  ([["org1", "1 org, 8 connections (\($r.load.org1.settings // "")) vs 8 clients"],
    ["orgs64", "10 orgs, 64 connections (\($r.load.orgs64.settings // "")) vs 64 clients"],
    ["batch100", "POST /process/batch × 100, 10 orgs, 8 connections vs 100-row INSERT, 8 clients"]][] as [$k, $title]
   | .load[$k] // null | if . == null then empty
     elif .missing then "| \($title) | \(.anchor_rows_per_s // "n/a") | \(.missing) | n/a | | | | | |"
     else "| \($title) | \(.anchor_rows_per_s) (\(.anchor_all | map(tostring) | join(", "))) | \(.poold_messages_per_s) (\(.poold_all | map(tostring) | join(", "))) | \(.ratio) [\(.ratio_min)–\(.ratio_max)] | \(.p50_ms | ms) / \(.p99_ms | ms) | \(.non200) | \(if .rows_ok then "ok" else "**FAILED**" end) | \(.cpu_us_per_message.client_s) · \(.cpu_us_per_message.server_s) (\(.cpu_us_per_message.server_user_s) + \(.cpu_us_per_message.server_sys_s)) · \(.cpu_us_per_message.postgres_s) | \(.anchor_cpu_us_per_row.client_s) · \(.anchor_cpu_us_per_row.postgres_s) |" end),
  "" end),
  (.rate // null | if . == null then empty else
   "### Latency at a fixed rate",
   "",
   "\(.target_rps | fmt(0)) req/s (half of poold's median 1-org maximum above), 8 connections, \($r.ceil_s) s; latency counted from each request's scheduled time (bench/loadgen rate: an even schedule; pgbench -R: Poisson arrivals, its per-transaction log, lag included).",
   "",
   "| Client | achieved req/s | p50 | p90 | p99 | p99.9 | max | non-200 | rows check |",
   "|---|---|---|---|---|---|---|---|---|",
   (.poold | "| poold, 1 org | \(.achieved_rps) | \(.latency.p50_ms | ms) | \(.latency.p90_ms | ms) | \(.latency.p99_ms | ms) | \(.latency.p999_ms | ms) | \(.latency.max_ms | ms) | \(.non200) | \(if .rows.rows_ok then "ok" else "**FAILED**" end) |"),
   (.pgbench | "| pgbench -M prepared -c 8 -R \(.target_rps) | | \(.p50_ms | ms) | | \(.p99_ms | ms) | | | | |"),
   "",
   "Service time (send to answer, without queueing behind the schedule): poold p50 \(.poold.service_time.p50_ms | ms), p99 \(.poold.service_time.p99_ms | ms); pgbench (latency − lag) p50 \(.pgbench.service_p50_ms | ms), p99 \(.pgbench.service_p99_ms | ms).",
   (if .poold_cpu_us_per_req == null then empty else
   "",
   "CPU per request at this rate: poold \(.poold_cpu_us_per_req.server_s) µs (user \(.poold_cpu_us_per_req.server_user_s) + kernel \(.poold_cpu_us_per_req.server_sys_s)), PostgreSQL \(.poold_cpu_us_per_req.postgres_s) µs, loadgen \(.poold_cpu_us_per_req.client_s) µs\(if .pgbench_cpu_us_per_req then "; under pgbench -R: PostgreSQL \(.pgbench_cpu_us_per_req.postgres_s) µs, pgbench \(.pgbench_cpu_us_per_req.client_s) µs" else "" end)." end),
   "" end),
  (if (.rows_checks.failed | length) > 0 then
   "**Rows check failed**: \(.rows_checks.failed | tojson)", "" else empty end),
  (if (.seed_batch | length) == 0 then empty else
  "### Batch throughput (the seed's `_run_batch`), pooled vs none",
  "",
  "Wall time from the first request to the last answer, median of \(.runs) runs; speedup = none / pooled within each run, median [min–max]. `scram`: poold's own costs, logging in to PostgreSQL with scram-sha-256 over TCP (a new connection's real price); `real`: the same with trust authentication; `seed`: trust plus POOLD_BUILD_COST_MS=10, POOLD_PROCESS_COST_MS=0.5. `cold`: a fresh poold, pools built lazily during the batch (the seed's setup: it makes new pools every round); `warm`: a second batch of the same shape right after, on the pools the first left. Every id is new (fresh tag per run and phase, table truncated per poold start), so every answer is a fresh insert.",
  "",
  "| Volume | Costs | Pools | none (no pool) | pooled (per-org) | Speedup | services built (pooled, cumulative) | non-200 |",
  "|---|---|---|---|---|---|---|---|",
  (.seed_batch[] | "| \(.volume) | \(.cost) | \(.phase) | \(.none_ms | ms) (\(.none_rps) msg/s) | \(.pooled_ms | ms) (\(.pooled_rps) msg/s) | \(.speedup)× [\(.speedup_min)–\(.speedup_max)] | \(.services_built) | \(.non200) |"),
  "",
  "" end),
  (if (.seed_single | length) == 0 then empty else
  "### Single request (sequential, one org, pool of 4), pooled vs none",
  "",
  "Sequential requests on one keep-alive connection after 20 unmeasured ones; median over runs of each run's mean and median; change = none / pooled within a run. `scram`: real costs, but poold logs in as a role that authenticates with scram-sha-256 (the other rows: trust, as scripts/pg.sh sets up).",
  "",
  "| Costs | Metric | none (no pool) | pooled (per-org) | Change |",
  "|---|---|---|---|---|",
  (.seed_single[] |
    "| \(.cost) | Mean time | \(.none_mean_ms | ms) | \(.pooled_mean_ms | ms) | \(.mean_ratio)× faster [\(.ratio_min)–\(.ratio_max)] |",
    "| \(.cost) | Throughput (req/s) | \(.none_per_s) | \(.pooled_per_s) | \(.mean_ratio)× higher |",
    "| \(.cost) | Median | \(.none_median_ms | ms) | \(.pooled_median_ms | ms) | \(.median_ratio)× faster |",
    "| \(.cost) | non-200 | \(.non200) | | |"),
  "" end),
  (if (.cpu | length) == 0 then empty else
  "### Where the CPU goes, pooled vs none",
  "",
  "A warm batch of 2000 messages, 8 workers, 10 orgs, 20 slots, real costs; CPU time of poold and of the whole PostgreSQL cluster (from /proc, 10 ms ticks) divided by the requests.",
  "",
  "| Mode | wall time | poold CPU µs/req | PostgreSQL CPU µs/req | non-200 |",
  "|---|---|---|---|---|",
  (.cpu[] | "| \(.mode) | \(.wall_ms | ms) | \(.poold_us_per_req) | \(.postgres_us_per_req) | \(.non200) |"),
  "" end),
  (if (.alloc | length) == 0 then empty else
  "### Heap allocations per request and resident memory (the seed's GC table)",
  "",
  "poold under bench/malloc_count.so (LD_PRELOAD), batch of N messages, 4 workers, 10 orgs, 4 slots, real costs, fresh poold each. Allocations = malloc+calloc+realloc+aligned calls in the whole process during the batch / N. RSS = VmRSS right after start → after the batch.",
  "",
  "| Messages | none allocs/req | none bytes/req | none RSS | pooled allocs/req | pooled bytes/req | pooled RSS | non-200 |",
  "|---|---|---|---|---|---|---|---|",
  (.alloc[] | "| \(.messages) | \(.none_allocs_per_req) | \(.none_bytes_per_req) | \(.none_rss_kb[0] | mib) → \(.none_rss_kb[1] | mib) | \(.pooled_allocs_per_req) | \(.pooled_bytes_per_req) | \(.pooled_rss_kb[0] | mib) → \(.pooled_rss_kb[1] | mib) | \(.non200) |"),
  "" end),
  (if .idle == null then empty else
   "### What one idle pooled service costs poold (the seed's `__slots__` table)",
   "",
   .idle as $i |
   "Heap in use (malloc_usable_size of live blocks) once poold is up, without and with POOLD_PREWARM=all (100 orgs, one service each); the PostgreSQL backend's own memory is not counted.",
   "",
   "| Configuration | services | heap in use | RSS | per service |",
   "|---|---|---|---|---|",
   "| prewarm empty | \($i.empty.services) | \($i.empty.bytes_in_use | kib) | \($i.empty.rss_kb | mib) | |",
   "| prewarm all, POOLD_POOL_CEILING=256 (default) | \($i.all.services) | \($i.all.bytes_in_use | kib) | \($i.all.rss_kb | mib) | \($i.bytes_per_service) B (RSS \($i.rss_kb_per_service) KiB) |",
   (if $i.all_ceiling4 then "| prewarm all, POOLD_POOL_CEILING=4 | \($i.all_ceiling4.services) | \($i.all_ceiling4.bytes_in_use | kib) | \($i.all_ceiling4.rss_kb | mib) | \($i.bytes_per_service_ceiling4) B |" else empty end),
   "| of which one libpq PGconn (bench/pgconn_size, 100 connections) | | | | \($i.pgconn_bytes) B |",
   "",
   "PostgreSQL backends held by poold with prewarm all: \($i.all.backends)."
   end),
  "",
  (if (.poolbench | length) == 0 then empty else
  "### pool_bench (acquire + release of a warm pool, max_size 4)",
  "",
  "| threads | ns per acquire+release |",
  "|---|---|",
  (.poolbench[] | "| \(.threads) | \(.ns_per_op) |"),
  "",
  (if .poolbench_allocs_per_pair then .poolbench_allocs_per_pair as $a | "Heap allocations of the whole pool_bench process under bench/malloc_count.so: \($a.allocs_short) with --seconds 0.5, \($a.allocs_long) with --seconds 1.5, i.e. \($a.allocs_long - $a.allocs_short) more for about \($a.extra_pairs) more acquire+release pairs = \($a.per_pair | fmt(9)) per pair." else empty end),
  "" end)
  ] | .[]
