# anchors.gp — poold against goref and pgbench -M prepared: requests/s and
# CPU µs per request, by case (bench/run.sh draws it from results.json).
#   gnuplot -e "rpsfile='rps.dat'; cpufile='cpu.dat'; outfile='anchors.svg'" anchors.gp
# rpsfile: case <TAB> poold <TAB> goref <TAB> pgbench (req/s; "-" when missing)
# cpufile: bar label <TAB> server <TAB> PostgreSQL <TAB> client (µs/request)
set terminal svg size 1100,480 dynamic font "sans,11"
set output outfile
set datafile separator "\t"
set datafile missing "-"
set style fill solid 0.85 border -1
set grid ytics
set multiplot layout 1,2 title "poold vs goref vs pgbench -M prepared (median of runs; one machine, 2 shared cores)"

set title "throughput"
set ylabel "requests per second (rows/s for pgbench)"
set yrange [0:*]
set style data histograms
set style histogram clustered gap 1
set boxwidth 0.9
set xtics noenhanced
set key below horizontal
plot rpsfile using 2:xtic(1) title "poold" lc rgb "#4f81bd", \
     '' using 3 title "goref" lc rgb "#9bbb59", \
     '' using 4 title "pgbench" lc rgb "#c0504d"

set title "CPU per request, from /proc"
set ylabel "CPU µs per request"
set style histogram rowstacked
set boxwidth 0.75
set xtics rotate by -30 noenhanced
set key below
plot cpufile using 2:xtic(1) title "server (poold / goref)" lc rgb "#4f81bd", \
     '' using 3 title "PostgreSQL" lc rgb "#c0504d", \
     '' using 4 title "load generator (wrk / pgbench)" lc rgb "#bfbfbf"
unset multiplot
