# report.jq — bench/out/results.json -> the markdown tables (jq -r).

def fmt(n): if . == null then "n/a" else
    (. * pow(10; n) | round / pow(10; n)) | tostring end;
def ms: if . == null then "n/a" elif . >= 100 then "\(fmt(0)) ms"
    elif . >= 1 then "\(fmt(2)) ms" else "\(. * 1000 | fmt(0)) µs" end;
def mib: if . == null then "n/a" else "\(. / 1024 | fmt(1)) MiB" end;
def kib: if . == null then "n/a" else "\(. / 1024 | fmt(1)) KiB" end;
def goal(ok): if ok then "met" else "**missed**" end;

. as $r
| [
  "## Machine",
  "",
  "\(.machine.nproc) cores (\(.machine.cpu)), \(.machine.memory), \(.machine.kernel), PostgreSQL \(.machine.postgresql); commit \(.machine.commit) (\(.machine.src_files_changed) uncommitted files under src/ include/), \(.machine.date), load average at start \(.machine.loadavg_at_start). Suite took \(.seconds) s; \(.runs) runs of the seed's workloads.",
  "",
  "## Batch throughput (the seed's `_run_batch`), pooled vs none",
  "",
  "Wall time from the first request to the last answer, median of \(.runs) runs; speedup = none / pooled within each run, median [min–max]. `real`: poold's own costs only; `seed`: plus POOLD_BUILD_COST_MS=10, POOLD_PROCESS_COST_MS=0.5. `cold`: a fresh poold, pools built lazily during the batch (the seed's setup: it makes new pools every round); `warm`: a second batch of the same shape right after, on the pools the first left. Every id is new (fresh tag per run and phase, table truncated per poold start), so every answer is a fresh insert.",
  "",
  "| Volume | Costs | Pools | none (no pool) | pooled (per-org) | Speedup | services built (pooled, cumulative) | non-200 |",
  "|---|---|---|---|---|---|---|---|",
  (.seed_batch[] | "| \(.volume) | \(.cost) | \(.phase) | \(.none_ms | ms) (\(.none_rps) msg/s) | \(.pooled_ms | ms) (\(.pooled_rps) msg/s) | \(.speedup)× [\(.speedup_min)–\(.speedup_max)] | \(.services_built) | \(.non200) |"),
  "",
  "## Single request (sequential, one org, pool of 4), pooled vs none",
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
  "",
  "## Where the CPU goes, pooled vs none",
  "",
  "A warm batch of 2000 messages, 8 workers, 10 orgs, 20 slots, real costs; CPU time of poold and of the whole PostgreSQL cluster (from /proc, 10 ms ticks) divided by the requests.",
  "",
  "| Mode | wall time | poold CPU µs/req | PostgreSQL CPU µs/req | non-200 |",
  "|---|---|---|---|---|",
  (.cpu[] | "| \(.mode) | \(.wall_ms | ms) | \(.poold_us_per_req) | \(.postgres_us_per_req) | \(.non200) |"),
  "",
  "## Heap allocations per request and resident memory (the seed's GC table)",
  "",
  "poold under bench/malloc_count.so (LD_PRELOAD), batch of N messages, 4 workers, 10 orgs, 4 slots, real costs, fresh poold each. Allocations = malloc+calloc+realloc+aligned calls in the whole process during the batch / N. RSS = VmRSS right after start → after the batch.",
  "",
  "| Messages | none allocs/req | none bytes/req | none RSS | pooled allocs/req | pooled bytes/req | pooled RSS | non-200 |",
  "|---|---|---|---|---|---|---|---|",
  (.alloc[] | "| \(.messages) | \(.none_allocs_per_req) | \(.none_bytes_per_req) | \(.none_rss_kb[0] | mib) → \(.none_rss_kb[1] | mib) | \(.pooled_allocs_per_req) | \(.pooled_bytes_per_req) | \(.pooled_rss_kb[0] | mib) → \(.pooled_rss_kb[1] | mib) | \(.non200) |"),
  "",
  "## What one idle pooled service costs poold (the seed's `__slots__` table)",
  "",
  (if .idle == null then "not measured" else
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
  "## The ceiling: poold against PostgreSQL's own rate for the same INSERT, 8 connections",
  "",
  (if .ceiling == null then "not measured" else
   .ceiling as $c |
   "Median of \($c.runs) runs each, run in turn (pgbench, poold 10 orgs, poold 1 org); ratio = poold / pgbench within a run, median. poold: POOLD_DB_MAX_CONNS=8, POOLD_POOL_SIZE=8, a 2 s warm-up first, then wrk -t2 -c8 with bench/post.lua. CPU per request: client, poold and the PostgreSQL cluster (postmaster, backends, WAL writer …), from /proc.",
   "",
   "| Client | req/s (median) | runs | ratio to pgbench | p50 | p99 | non-200 | services built / evicted | CPU µs/req client · poold · PostgreSQL |",
   "|---|---|---|---|---|---|---|---|---|",
   "| pgbench -M extended -c 8 -j 2, bench/pgbench_insert.sql | \($c.pgbench.rps) | \($c.pgbench.rps_all | map(tostring) | join(", ")) | 1.00 | | | \($c.pgbench.failed) failed | | \($c.pgbench.cpu_us_per_req.client_s) · – · \($c.pgbench.cpu_us_per_req.postgres_s) |",
   ($c.poold_orgs10 | "| poold, 10 orgs | \(.rps) | \(.rps_all | map(tostring) | join(", ")) | \($c.ratio_orgs10) | \(.p50_ms | ms) | \(.p99_ms | ms) | \(.non200) | \(.services_built) / \(.evicted) | \(.cpu_us_per_req.client_s) · \(.cpu_us_per_req.poold_s) · \(.cpu_us_per_req.postgres_s) |"),
   ($c.poold_org1 | "| poold, 1 org | \(.rps) | \(.rps_all | map(tostring) | join(", ")) | \($c.ratio_org1) | \(.p50_ms | ms) | \(.p99_ms | ms) | \(.non200) | \(.services_built) / \(.evicted) | \(.cpu_us_per_req.client_s) · \(.cpu_us_per_req.poold_s) · \(.cpu_us_per_req.postgres_s) |"),
   "",
   (if $c.pgbench_c1 then "PostgreSQL's floor for one request: pgbench with 1 client does the same INSERT in \($c.pgbench_c1.latency_avg_ms) ms on average (\($c.pgbench_c1.rps | fmt(0)) tps)." else empty end),
   "",
   (if $c.rate_poold_org1 then
   "At a fixed rate of \($c.rate_poold_org1.target_rps | fmt(0)) req/s (half of poold's 1-org maximum), 8 connections, latency from each request's scheduled time (bench/loadgen rate; pgbench -R: its per-transaction log):",
   "",
   "| Client | achieved req/s | p50 | p90 | p99 | p99.9 | max | non-200 |",
   "|---|---|---|---|---|---|---|---|",
   ($c.rate_poold_org1 | "| poold, 1 org | \(.achieved_rps) | \(.latency.p50_ms | ms) | \(.latency.p90_ms | ms) | \(.latency.p99_ms | ms) | \(.latency.p999_ms | ms) | \(.latency.max_ms | ms) | \(.non200) |"),
   ($c.rate_poold_orgs10 // empty | "| poold, 10 orgs | \(.achieved_rps) | \(.latency.p50_ms | ms) | \(.latency.p90_ms | ms) | \(.latency.p99_ms | ms) | \(.latency.p999_ms | ms) | \(.latency.max_ms | ms) | \(.non200) |"),
   ($c.rate_pgbench // empty | "| pgbench -c 8 -R \(.target_rps) (Poisson arrivals) | | \(.p50_ms | ms) | | \(.p99_ms | ms) | | | |"),
   "",
   "Service time (send to answer, without the client's queueing): poold 1 org p50 \($c.rate_poold_org1.service_time.p50_ms | ms), p99 \($c.rate_poold_org1.service_time.p99_ms | ms)\($c.rate_poold_orgs10 // empty | "; poold 10 orgs p50 \(.service_time.p50_ms | ms), p99 \(.service_time.p99_ms | ms)")\($c.rate_pgbench // empty | "; pgbench (latency − schedule lag) p50 \(.service_p50_ms | ms), p99 \(.service_p99_ms | ms)")."
   else empty end)
   end),
  "",
  "## pool_bench (acquire + release of a warm pool, max_size 4)",
  "",
  "| threads | ns per acquire+release |",
  "|---|---|",
  (.poolbench[] | "| \(.threads) | \(.ns_per_op) |"),
  "",
  (if .poolbench_allocs_per_pair then .poolbench_allocs_per_pair as $a | "Heap allocations of the whole pool_bench process under bench/malloc_count.so: \($a.allocs_short) with --seconds 0.5, \($a.allocs_long) with --seconds 1.5, i.e. \($a.allocs_long - $a.allocs_short) more for about \($a.extra_pairs) more acquire+release pairs = \($a.per_pair | fmt(9)) per pair." else empty end),
  "",
  "## Goals",
  "",
  "| Goal | Figure | |",
  "|---|---|---|",
  (.seed_single[] | select(.cost != "seed") | "| single request, \(.cost) costs, pooled vs none ≥ 25× | \(.mean_ratio)× (mean), \(.median_ratio)× (median) | \(goal(.mean_ratio >= 25)) |"),
  (.seed_batch[] | "| \(.workload) (\(.cost) costs, \(.phase) pools) ≥ 10× | \(.speedup)× | \(goal(.speedup >= 10)) |"),
  (if .ceiling and .ceiling.ratio_orgs10 then
    "| ≥ 0.8 of pgbench's INSERT rate at 8 connections, 1 org | \(.ceiling.ratio_org1) | \(goal(.ceiling.ratio_org1 >= 0.8)) |",
    "| ≥ 0.8 of pgbench's INSERT rate at 8 connections, 10 orgs | \(.ceiling.ratio_orgs10) | \(goal(.ceiling.ratio_orgs10 >= 0.8)) |" else empty end),
  (if .poolbench_allocs_per_pair then "| zero heap allocations per acquire/release of a warm pool | \(.poolbench_allocs_per_pair.per_pair | fmt(9)) per pair | \(goal(.poolbench_allocs_per_pair.per_pair < 0.000001)) |" else empty end)
  ] | .[]
