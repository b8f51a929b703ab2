# plot.gp — throughput by workload, pooled vs none (bench/run.sh draws it).
#   gnuplot -e "datafile='throughput.dat'; outfile='throughput.png'" plot.gp
# datafile: label <TAB> none <TAB> pooled (requests per second)
set terminal pngcairo size 1100,560 font "sans,10"
set output outfile
set datafile separator "\t"
set title "poold: throughput by workload, pooled vs none (median of runs)"
set ylabel "requests per second (log scale)"
set logscale y
set yrange [10:*]
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set xtics rotate by -30 noenhanced
set grid ytics
set key top right
plot datafile using 2:xtic(1) title "none (service built per request)" lc rgb "#c0504d", \
     '' using 3 title "pooled (per-org pools)" lc rgb "#4f81bd"
