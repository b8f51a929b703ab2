# summarize.jq — bench/out/raw.jsonl (slurped) -> bench/out/results.json.
# Medians over runs; ratios are taken within one run (none / pooled of the
# same run, same messages), then their median is reported.

def median: sort | if length == 0 then null
    elif length % 2 == 1 then .[length / 2 | floor]
    else (.[length / 2 - 1] + .[length / 2]) / 2 end;
def r(n): if . == null then null else (. * pow(10; n) | round) / pow(10; n) end;
def of(k): map(select(.kind == k));

. as $all
| ($all | of("seed")) as $seed
| ($seed | map(.run) | unique) as $runs
| def pair(w; c; ph; f): [ $runs[] as $k
      | ($seed | map(select(.workload == w and .cost == c and .run == $k
                            and .phase == ph))) as $x
      | ($x | map(select(.mode == "none")) | first) as $n
      | ($x | map(select(.mode == "pooled")) | first) as $p
      | select($n != null and $p != null)
      | {none: ($n | f), pooled: ($p | f), ratio: (($n | f) / ($p | f))} ];
def nonok(w; c; ph): $seed | map(select(.workload == w and .cost == c
                                   and .phase == ph) | .non200) | add;
{
  machine: ($all | of("machine") | first | del(.kind)
    | . + (($all | of("machine_end") | first // {}) | del(.kind))),
  seconds: $ARGS.named.seconds,
  ceil_s: $ARGS.named.ceil_s,
  runs: ($runs | length),
  seed_batch: ([
    ["batch200", "200 msg, 4 workers, 4 slots/org", 200],
    ["batch1000", "1000 msg, 8 workers, 20 slots/org", 1000]
  ] as $ws | [ $ws[] as [$w, $vol, $n] | ("scram", "real", "seed") as $c
    | ("cold", "warm") as $ph
    | pair($w; $c; $ph; .wall_ms) as $p
    | select($p | length > 0)
    | {workload: $w, volume: $vol, cost: $c, phase: $ph, messages: $n,
       none_ms: ($p | map(.none) | median | r(1)),
       pooled_ms: ($p | map(.pooled) | median | r(1)),
       none_rps: ($n / ($p | map(.none) | median) * 1000 | r(0)),
       pooled_rps: ($n / ($p | map(.pooled) | median) * 1000 | r(0)),
       speedup: ($p | map(.ratio) | median | r(2)),
       speedup_min: ($p | map(.ratio) | min | r(2)),
       speedup_max: ($p | map(.ratio) | max | r(2)),
       runs: ($p | length),
       non200: nonok($w; $c; $ph),
       services_built: ($seed | map(select(.workload == $w and .cost == $c
           and .mode == "pooled" and .phase == $ph) | .services_built) | median),
       per_run: $p} ]),
  seed_single: ([ ("scram", "real", "seed") as $c
    | pair("single"; $c; "warm"; .latency.mean_ms) as $mean
    | pair("single"; $c; "warm"; .latency.median_ms) as $med
    | select($mean | length > 0)
    | {cost: $c,
       none_mean_ms: ($mean | map(.none) | median | r(3)),
       pooled_mean_ms: ($mean | map(.pooled) | median | r(3)),
       mean_ratio: ($mean | map(.ratio) | median | r(1)),
       none_median_ms: ($med | map(.none) | median | r(3)),
       pooled_median_ms: ($med | map(.pooled) | median | r(3)),
       median_ratio: ($med | map(.ratio) | median | r(1)),
       none_per_s: (1000 / ($mean | map(.none) | median) | r(1)),
       pooled_per_s: (1000 / ($mean | map(.pooled) | median) | r(1)),
       ratio_min: ($mean | map(.ratio) | min | r(1)),
       ratio_max: ($mean | map(.ratio) | max | r(1)),
       runs: ($mean | length),
       non200: nonok("single"; $c; "warm"),
       per_run_mean: $mean} ]),
  cpu: ($all | of("cpu") | map({mode, wall_ms, non200, poold_us_per_req,
                               postgres_us_per_req})),
  alloc: ([ $all | of("alloc") | group_by(.messages)[]
    | (map(select(.mode == "pooled")) | first) as $p
    | (map(select(.mode == "none")) | first) as $n
    | {messages: .[0].messages,
       pooled_allocs_per_req: (($p.after.allocs - $p.before.allocs) / $p.messages | r(1)),
       none_allocs_per_req: (($n.after.allocs - $n.before.allocs) / $n.messages | r(1)),
       pooled_bytes_per_req: (($p.after.bytes_total - $p.before.bytes_total) / $p.messages | r(0)),
       none_bytes_per_req: (($n.after.bytes_total - $n.before.bytes_total) / $n.messages | r(0)),
       pooled_rss_kb: [$p.rss_before_kb, $p.rss_after_kb],
       none_rss_kb: [$n.rss_before_kb, $n.rss_after_kb],
       pooled_heap_in_use: [$p.before.bytes_in_use, $p.after.bytes_in_use],
       none_heap_in_use: [$n.before.bytes_in_use, $n.after.bytes_in_use],
       pooled_wall_ms: $p.wall_ms, none_wall_ms: $n.wall_ms,
       non200: ($p.non200 + $n.non200)} ]),
  idle: (($all | of("idle")) as $i
    | ($i | map(select(.case == "empty")) | first) as $e
    | ($i | map(select(.case == "all")) | first) as $a
    | ($i | map(select(.case == "all_ceiling4")) | first) as $c4
    | ($all | of("pgconn") | first) as $pc
    | if $e == null or $a == null then null else
      {empty: $e, all: $a, all_ceiling4: $c4, pgconn: $pc,
       bytes_per_service: (($a.bytes_in_use - $e.bytes_in_use) / $a.services | r(0)),
       bytes_per_service_ceiling4: (if $c4 == null then null else
           ($c4.bytes_in_use - $e.bytes_in_use) / $c4.services | r(0) end),
       rss_kb_per_service: (($a.rss_kb - $e.rss_kb) / $a.services | r(1)),
       pgconn_bytes: ($pc.bytes_per_conn_after_query // null)} end),
  load: (($all | of("poold")) as $p
    | ($all | of("anchor")) as $a
    | def cpu_us: . as $x | if $x.cpu == null or ($x.requests // 0) == 0 then null
          else $x.cpu | map_values(. / ($x.requests * ($x.per_request // 1)) * 1e6)
          end;
    def med(f): map(f) | map(select(. != null)) | median;
    def pair(pc; ac): [ $p[] | select(.case == pc and .missing == null) as $x
          | ($a | map(select(.case == ac and .run == $x.run)) | first) as $g
          | select($g != null and ($g.rows_per_s // 0) > 0)
          | {run: $x.run, poold: $x.messages_per_s, anchor: $g.rows_per_s,
             ratio: ($x.messages_per_s / $g.rows_per_s)} ];
    def one(pc; ac): ($p | map(select(.case == pc))) as $xs
      | ($a | map(select(.case == ac and .tps != null))) as $gs
      | pair(pc; ac) as $r
      | if ($xs | map(.missing) | map(select(. != null)) | length) > 0 then
          {missing: ($xs | map(.missing) | map(select(. != null)) | first),
           anchor_rows_per_s: ($gs | med(.rows_per_s) | r(0)),
           anchor_clients: ($gs | first | .clients)}
        elif ($r | length) == 0 then
          (if ($xs | length) == 0 then null else
           {missing: "n/a: no pgbench figure to compare with (see the run's log)",
            anchor_rows_per_s: null} end)
        else
          ($xs | map(select(.missing == null))) as $ok
          | {runs: ($r | length),
             ratio: ($r | map(.ratio) | median | r(3)),
             ratio_min: ($r | map(.ratio) | min | r(3)),
             ratio_max: ($r | map(.ratio) | max | r(3)),
             poold_messages_per_s: ($r | map(.poold) | median | r(0)),
             poold_rps: ($ok | med(.rps) | r(0)),
             poold_all: ($r | map(.poold | r(0))),
             anchor_rows_per_s: ($r | map(.anchor) | median | r(0)),
             anchor_all: ($r | map(.anchor | r(0))),
             anchor_clients: ($gs | first | .clients),
             anchor_failed: ($gs | map(.failed) | add),
             anchor_latency_avg_ms: ($gs | med(.latency_avg_ms)),
             anchor_cpu_us_per_row: ($gs | map(.cpu as $c | .requests as $n
                 | .rows_per_tx as $k | $c | map_values(. / ($n * $k) * 1e6))
                 | . as $u | (.[0] | keys) as $ks
                 | reduce $ks[] as $key ({}; .[$key] = ($u | map(.[$key]) | median | r(1)))),
             p50_ms: ($ok | med(.latency.p50_ms)),
             p99_ms: ($ok | med(.latency.p99_ms)),
             non200: ($ok | map(.non200) | add),
             message_errors: ($ok | map(.message_errors // 0) | add),
             rows_ok: ($ok | all(.rows.rows_ok)),
             rows: ($ok | map(.rows)),
             services_built: ($ok | med(.stats.services_built)),
             services_evicted: ($ok | med(.stats.evicted)),
             cpu_us_per_message: ($ok | map(cpu_us) | map(select(. != null))
                 | if length == 0 then null else . as $u | (.[0] | keys) as $ks
                   | reduce $ks[] as $key ({}; .[$key] = ($u | map(.[$key]) | median | r(1)))
                   end),
             per_request: ($ok | first | .per_request),
             settings: ($ok | first | .settings),
             loadavg: ($ok | map(.loadavg)),
             anchor_loadavg: ($gs | map(.loadavg)),
             connections: ($ok | first | .connections)}
        end;
    {org1: one("org1"; "c8"), orgs64: one("orgs64"; "c64"),
     batch100: one("batch100"; "b100")}),
  goref: (($all | of("poold")) as $p
    | ($all | of("goref")) as $g
    | def cpu_us: . as $x | if $x.cpu == null or ($x.requests // 0) == 0 then null
          else $x.cpu | map_values(. / $x.requests * 1e6) end;
    def medcpu: map(cpu_us) | map(select(. != null))
        | if length == 0 then null else . as $u | (.[0] | keys) as $ks
          | reduce $ks[] as $key ({}; .[$key] = ($u | map(.[$key]) | median | r(1)))
          end;
    def one(c): ($g | map(select(.case == c))) as $gs
      | [ $p[] | select(.case == c and .missing == null) as $x
          | ($gs | map(select(.run == $x.run)) | first) as $y
          | select($y != null and ($y.messages_per_s // 0) > 0)
          | {run: $x.run, poold: $x.messages_per_s, goref: $y.messages_per_s,
             ratio: ($x.messages_per_s / $y.messages_per_s)} ] as $r
      | if ($gs | length) == 0 then null else
        {runs: ($r | length),
         ratio: ($r | map(.ratio) | median | r(3)),
         ratio_min: ($r | map(.ratio) | min | r(3)),
         ratio_max: ($r | map(.ratio) | max | r(3)),
         goref_messages_per_s: ($gs | map(.messages_per_s) | median | r(0)),
         goref_all: ($gs | map(.messages_per_s | r(0))),
         p50_ms: ($gs | map(.latency.p50_ms) | median),
         p99_ms: ($gs | map(.latency.p99_ms) | median),
         non200: ($gs | map(.non200) | add),
         rows_ok: ($gs | all(.rows.rows_ok)),
         settings: ($gs | first | .settings),
         loadavg: ($gs | map(.loadavg)),
         cpu_us_per_message: ($gs | medcpu)} end;
    {org1: one("org1"), orgs64: one("orgs64")}),
  # Each side's run with the median p99 (the lower one of an even count).
  rate: (($all | of("rate")) as $rt
    | ($rt | map(select(.who == "poold"))) as $ps
    | ($rt | map(select(.who == "pgbench"))) as $gs
    | ($ps | sort_by(.latency.p99_ms) | .[(length - 1) / 2 | floor]) as $p
    | ($gs | sort_by(.p99_ms) | .[(length - 1) / 2 | floor]) as $g
    | if $p == null or $g == null then null else
      {target_rps: $p.target_rps, poold: $p, pgbench: $g,
       poold_p99_all: ($ps | map(.latency.p99_ms)),
       pgbench_p99_all: ($gs | map(.p99_ms)),
       ratio_p99: ($p.latency.p99_ms / $g.p99_ms | r(3)),
       poold_cpu_us_per_req: (if $p.cpu == null or $p.ok == 0 then null else
           ($p.cpu | map_values(. / $p.requests * 1e6 | r(1))) end),
       pgbench_cpu_us_per_req: (if $g.cpu == null or ($g.n // 0) == 0 then null else
           ($g.cpu | map_values(. / $g.n * 1e6 | r(1))) end)}
      end),
  exhaust: ($all | of("exhaust") | first // null
    | if . == null then null else
      . + {met: (.s503 == .in_time and .other == 0 and .rows.rows_ok)} end),
  rows_checks: ([$all[] | select(.rows != null and (.rows | type) == "object")
      | {kind, case: (.case // .workload), mode, run, phase} + .rows]
    | {checks: length, failed: map(select(.rows_ok | not))}),
  poolbench: ($all | of("poolbench") | map({threads, ns_per_op, line})),
  poolbench_allocs: ($all | of("poolbench_allocs") | first),
  raw: $all
}
| .poolbench_allocs_per_pair = (
    if .poolbench_allocs == null or (.poolbench | length) == 0 then null else
    # extra pairs in the long run (3 cases, 1 s longer each), estimated from
    # the 2 s run's ns_per_op
    (.poolbench_allocs.long_s - .poolbench_allocs.short_s) as $extra_s
    | (.poolbench | map(1e9 / .ns_per_op) | add * $extra_s) as $pairs
    | {allocs_short: .poolbench_allocs.allocs_short,
       allocs_long: .poolbench_allocs.allocs_long,
       extra_pairs: ($pairs | round),
       per_pair: ((.poolbench_allocs.allocs_long - .poolbench_allocs.allocs_short)
                  / $pairs)} end)
| .plot = ([.seed_batch[] | {name: "\(.workload) \(.cost) \(.phase)",
                             none: .none_rps, pooled: .pooled_rps}]
           + [.seed_single[] | {name: "single \(.cost)",
                                none: .none_per_s, pooled: .pooled_per_s}])
| .anchors_plot = [[["org1", "c8", "1 org, 8 conns"], ["orgs64", "c64", "10 orgs, 64 conns"]][]
    as [$k, $a, $lab]
    | . as $s | ($s.load[$k] // null) as $l | ($s.goref[$k] // null) as $g
    | select($l != null and $l.missing == null)
    | {label: $lab,
       poold_rps: $l.poold_messages_per_s,
       goref_rps: ($g.goref_messages_per_s // null),
       pgbench_rps: $l.anchor_rows_per_s,
       poold_cpu: $l.cpu_us_per_message,
       goref_cpu: ($g.cpu_us_per_message // null),
       pgbench_cpu: $l.anchor_cpu_us_per_row}]
