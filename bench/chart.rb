# frozen_string_literal: true

require "open3"
require_relative "support"

module Bench
  # results.png with gnuplot (Debian's gnuplot-nox): throughput, idle
  # latency, and the worker's RSS across the long PGMQ run.
  class Chart
    def initialize(runs, rss_samples)
      @runs = runs
      @rss_samples = rss_samples || []
      @dir = File.join(OUT, "chart")
    end

    def write(png)
      FileUtils.mkdir_p(@dir)
      write_data
      out, status = Open3.capture2e("gnuplot", stdin_data: script(png))
      Bench.log "gnuplot failed: #{out}" unless status.success?
    end

    private

    def value(metric)
      @runs[metric] || 0
    end

    def write_data
      bars = [["PGMQ raw\\nround trips", "pgmq_raw_roundtrips_per_s"],
              ["Sidekiq\\nchain jobs", "sidekiq_chain_jobs_per_s"],
              ["tasker PGMQ\\nsteps", "tasker_pgmq_steps_per_s"],
              ["tasker RabbitMQ\\nsteps", "tasker_rabbitmq_steps_per_s"]]
      File.write(File.join(@dir, "throughput.dat"), bars.map { |label, m| "\"#{label}\" #{value(m)}\n" }.join)
      latency = [["Sidekiq chain of 4", "sidekiq_chain_idle"], ["tasker linear-4 (PGMQ)", "tasker_pgmq_linear4_idle"]]
      File.write(File.join(@dir, "latency.dat"),
                 latency.map { |label, m| "\"#{label}\" #{value("#{m}_p50_ms")} #{value("#{m}_p99_ms")}\n" }.join)
      samples = @rss_samples.sort_by { |s| s["t"].to_f }
      samples = [{ "steps" => 0, "rss_mb" => 0 }] if samples.empty?
      File.write(File.join(@dir, "rss.dat"), samples.map { |s| "#{s['steps']} #{s['rss_mb']}\n" }.join)
    end

    def script(png)
      <<~GNUPLOT
        set terminal pngcairo size 1500,540 font "DejaVu Sans,10" noenhanced
        set output "#{png}"
        set multiplot layout 1,3 title "tasker_core bench (#{Time.now.utc.strftime('%Y-%m-%d')}, #{Etc.nprocessors} CPUs, fsync on)"
        set style fill solid 0.8 border -1
        set bmargin 4
        set boxwidth 0.6
        set grid ytics
        set yrange [0:*]
        set title "Throughput per second (median of batches)"
        plot "#{@dir}/throughput.dat" using 0:2:xtic(1) with boxes lc rgb "#4477aa" notitle, \\
             "" using 0:2:(sprintf("%.0f", $2)) with labels offset 0,0.7 notitle
        set title "Idle create-to-complete latency, 4 steps (ms, log scale)"
        set logscale y
        set yrange [0.5:*]
        set style data histogram
        set style histogram clustered gap 1
        set key top left
        plot "#{@dir}/latency.dat" using 2:xtic(1) title "p50" lc rgb "#66ccee", "" using 3 title "p99" lc rgb "#ee6677"
        set title "Worker RSS across the PGMQ throughput run"
        unset logscale y
        set yrange [0:*]
        set xlabel "steps completed"
        set ylabel "RSS (MB)"
        unset key
        plot "#{@dir}/rss.dat" using 1:2 with linespoints pt 7 ps 0.4 lc rgb "#228833"
        unset multiplot
      GNUPLOT
    end
  end
end
