# soak.gp — the fault soak over time (bench/soak.sh draws it):
#   gnuplot -e "dir='bench/out/soak'; outfile='docs/soak.png'; secs=90; bound=4000; warm=30; title='...'" soak.gp
# dir holds latency.dat (t p50 p99 max n), rss.dat (t rss1 rss2 rss3, KiB),
# rss.dat also poold-1's heap in use (KiB, column 5), conns.dat (t total
# housekeeping limit) and faults.dat (t kind).
set terminal pngcairo size 1200,1150 font "sans,10"
set output outfile
set multiplot layout 3,1 title title noenhanced
set grid
set key below horizontal noenhanced
set xrange [0:secs]
set title noenhanced
set xlabel "seconds into the run"
set lmargin 10
set rmargin 10

set title "latency from full send, per second (log scale); marks: database and replica faults"
set ylabel "ms"
set logscale y
set yrange [0.1:*]
plot dir.'/latency.dat' using 1:2 with lines lw 1 lc rgb "#4f81bd" title "p50", \
     '' using 1:3 with lines lw 1 lc rgb "#9bbb59" title "p99", \
     '' using 1:4 with points pt 7 ps 0.3 lc rgb "#c0504d" title "max", \
     bound with lines dt 2 lw 2 lc rgb "black" title "bound (acquire + statement + 1 s)", \
     '< grep -E "pg_(restart|sigstop)" '.dir.'/faults.dat' using 1:(0.15) with points pt 9 ps 1.2 lc rgb "#8064a2" title "PostgreSQL restart / SIGSTOP", \
     '< grep pg_terminate '.dir.'/faults.dat' using 1:(0.2) with points pt 11 ps 1.0 lc rgb "#f79646" title "backends terminated", \
     '< grep replica_kill '.dir.'/faults.dat' using 1:(0.27) with points pt 5 ps 0.9 lc rgb "#c0504d" title "replica SIGKILL"
unset logscale y

set title "resident memory of each replica (poold-1 is never killed); poold-1's heap in use (malloc_count), right axis"
set ylabel "RSS, MiB"
set yrange [*:*]
set y2label "heap in use, MiB"
set y2tics
set y2range [0:*]
set arrow 1 from warm, graph 0 to warm, graph 1 nohead dt 3 lw 1 lc rgb "black"
set label 1 " end of warm-up" at warm, graph 0.06 left
set ytics nomirror
plot dir.'/rss.dat' using 1:($2/1024) with lines lw 2 title "poold-1", \
     '' using 1:($3/1024) with lines lw 1 title "poold-2", \
     '' using 1:($4/1024) with lines lw 1 title "poold-3", \
     '' using 1:($5/1024) axes x1y2 with lines dt 3 lw 2 lc rgb "#7f7f7f" title "poold-1 heap in use"
unset y2tics
unset y2label
unset arrow 1
unset label 1
set ytics mirror

set title "PostgreSQL connections of poold (pg_stat_activity, application_name poold%)"
set ylabel "connections"
set yrange [0:*]
plot dir.'/conns.dat' using 1:2 with lines lw 1 lc rgb "#4f81bd" title "all", \
     '' using 1:3 with lines lw 1 lc rgb "#9bbb59" title "housekeeping", \
     '' using 1:4 with lines dt 2 lw 2 lc rgb "black" title "limit (budget + one per replica)"
unset multiplot
