# frozen_string_literal: true

require "time"
require_relative "support"
require_relative "chart"
require_relative "machine"

module Bench
  Metric = Struct.new(:part, :key, :unit, :reference, :versus)
  # name => where it comes from, its unit, the issue's reference figure,
  # and the Sidekiq figure it is compared with.
  METRICS = {
    "pgmq_raw_roundtrips_per_s" => Metric.new("pgmq_raw", "roundtrips_per_s", "msg/s",
                                              "~2,100 read+delete/s (2,500 sends/s), 4+4 processes",
                                              "sidekiq_chain_jobs_per_s"),
    "sidekiq_chain_jobs_per_s" => Metric.new("sidekiq_chain", "jobs_per_s", "jobs/s", "2,000-2,500 (noop: ~3,100)"),
    "sidekiq_chain_idle_p50_ms" => Metric.new("sidekiq_chain", "p50_ms", "ms", "1.7"),
    "sidekiq_chain_idle_p99_ms" => Metric.new("sidekiq_chain", "p99_ms", "ms", "4.8"),
    "sidekiq_chain_durable_jobs_per_s" => Metric.new("sidekiq_chain_durable", "jobs_per_s", "jobs/s",
                                                     "Redis appendonly, appendfsync always",
                                                     "sidekiq_chain_jobs_per_s"),
    "flow_floor_steps_per_s" => Metric.new("flow_floor", "steps_per_s", "steps/s",
                                           "PostgreSQL alone: the flow's rows as plain statements",
                                           "sidekiq_chain_jobs_per_s"),
    "flow_floor_postgres_cpu_ms_per_step" => Metric.new("flow_floor", "postgres_cpu_ms_per_step", "ms", "-"),
    "tasker_pgmq_steps_per_s" => Metric.new("tasker_pgmq_throughput", "steps_per_s", "steps/s",
                                            "target >= 1.0x Sidekiq", "sidekiq_chain_jobs_per_s"),
    "tasker_pgmq_no_orchestrator_steps_per_s" => Metric.new("tasker_pgmq_throughput_no_orchestrator", "steps_per_s",
                                                            "steps/s", "workers alone",
                                                            "sidekiq_chain_jobs_per_s"),
    "tasker_pgmq_rows_per_step" => Metric.new("tasker_pgmq_throughput", "rows_per_step", "rows", "-"),
    "tasker_pgmq_wal_records_per_step" => Metric.new("tasker_pgmq_throughput", "wal_records_per_step", "records",
                                                     "cluster-wide"),
    "tasker_rabbitmq_steps_per_s" => Metric.new("tasker_rabbitmq_throughput", "steps_per_s", "steps/s", "-",
                                                "sidekiq_chain_jobs_per_s"),
    "sidekiq_chain_bulk_jobs_per_s" => Metric.new("sidekiq_chain_bulk", "jobs_per_s", "jobs/s",
                                                  "first jobs pushed 100 at a time (push_bulk)"),
    "tasker_pgmq_bulk_steps_per_s" => Metric.new("tasker_pgmq_throughput_bulk", "steps_per_s", "steps/s",
                                                 "tasks created 100 at a time (create_tasks)",
                                                 "sidekiq_chain_bulk_jobs_per_s"),
    "tasker_rabbitmq_bulk_steps_per_s" => Metric.new("tasker_rabbitmq_throughput_bulk", "steps_per_s", "steps/s",
                                                     "tasks created 100 at a time (create_tasks)",
                                                     "sidekiq_chain_bulk_jobs_per_s"),
    "tasker_pgmq_linear4_idle_p50_ms" => Metric.new("tasker_pgmq_latency", "p50_ms", "ms",
                                                    "minutes after Sidekiq's; original Tasker ~255",
                                                    "sidekiq_chain_idle_p50_ms"),
    "tasker_pgmq_linear4_idle_p99_ms" => Metric.new("tasker_pgmq_latency", "p99_ms", "ms", "-",
                                                    "sidekiq_chain_idle_p99_ms"),
    "tasker_pgmq_diamond4_idle_p50_ms" => Metric.new("tasker_pgmq_latency_diamond4", "p50_ms", "ms",
                                                     "a step, four in parallel, a join"),
    "idle_pair_sidekiq_p50_ms" => Metric.new("idle_pair", "sidekiq_p50_ms", "ms",
                                             "Sidekiq's chain, interleaved with the next line"),
    "idle_pair_tasker_p50_ms" => Metric.new("idle_pair", "tasker_p50_ms", "ms",
                                            "linear-4, interleaved: the latency targets' ratio",
                                            "idle_pair_sidekiq_p50_ms"),
    "tasker_fanout_1000_s" => Metric.new("tasker_fanout", "seconds", "s", "-"),
    "tasker_dynamic_fanout_1000_s" => Metric.new("tasker_fanout", "dynamic_seconds", "s",
                                                 "the 1,000 steps made at run time"),
    "web_overview_1m_tasks_ms" => Metric.new("web_dashboard", "overview_p50_ms", "ms", "target < 200 with 1M tasks"),
    "web_task_list_1m_tasks_ms" => Metric.new("web_dashboard", "task_list_p50_ms", "ms",
                                              "target < 200 with 1M tasks"),
    "worker_rss_mb" => Metric.new("tasker_pgmq_throughput", "worker_rss_peak_mb", "MB (peak)",
                                  "target: flat across 100k steps", "sidekiq_rss_peak_mb")
  }.freeze

  # Turns the scenarios' part files into results.json, results.md and
  # results.png (gnuplot).
  class Report
    # Growth of the worker's RSS from the end of the first batch to the end
    # of the run that still counts as flat.
    FLAT_TOLERANCE = 0.05

    def initialize(scenarios:, wall_time_s:, failed:, fdatasync_per_s:)
      @scenarios = scenarios
      @wall_time_s = wall_time_s
      @failed = failed
      @fdatasync_per_s = fdatasync_per_s
      @parts = Dir.glob(File.join(PARTS, "*.json")).to_h do |path|
        [File.basename(path, ".json"), JSON.parse(File.read(path))]
      end
    end

    def part(name, key)
      @parts.dig(name, key)
    end

    def runs
      @runs ||= METRICS.transform_values { |m| part(m.part, m.key) }
    end

    # Each figure against its Sidekiq counterpart from this run.
    def ratios
      @ratios ||= METRICS.filter_map do |name, m|
        base = sidekiq_figure(m.versus)
        [name, (runs[name].to_f / base).round(2)] if runs[name] && base&.positive?
      end.to_h
    end

    def sidekiq_figure(name)
      return nil unless name

      name == "sidekiq_rss_peak_mb" ? part("sidekiq_chain", name) : runs[name]
    end

    def rss_flat
      first = part("tasker_pgmq_throughput", "worker_rss_after_first_batch_mb")
      last = part("tasker_pgmq_throughput", "worker_rss_end_mb")
      return nil unless first && last

      { "after_first_batch_mb" => first, "end_mb" => last,
        "growth_pct" => ((last - first) / first * 100).round(1), "flat" => last <= first * (1 + FLAT_TOLERANCE) }
    end

    def targets
      flat = rss_flat
      web_ms = runs.values_at("web_overview_1m_tasks_ms", "web_task_list_1m_tasks_ms").compact.max
      [
        target("tasker PGMQ steps/s >= 1.0x Sidekiq chain jobs/s", ratios["tasker_pgmq_steps_per_s"]) { |r| r >= 1.0 },
        target("idle linear-4 p50 <= 2x Sidekiq idle chain p50 (interleaved)", ratios["idle_pair_tasker_p50_ms"]) do |r|
          r <= 2.0
        end,
        *floors,
        target("worker RSS flat across #{rss_steps} (end within #{(FLAT_TOLERANCE * 100).round} % of after " \
               "the first batch)",
               flat && "#{flat['after_first_batch_mb']} -> #{flat['end_mb']} MB (#{flat['growth_pct']} %)") do
          flat["flat"]
        end,
        target("dashboard overview and task list under 200 ms with 1M tasks (p50 of the slower)",
               web_ms && "#{format_number(web_ms)} ms") { web_ms < 200 },
        target("bench completes in under 25 minutes", "#{(@wall_time_s / 60).round(1)} min") do
          @wall_time_s < 25 * 60
        end
      ]
    end

    def write
      FileUtils.mkdir_p(OUT)
      File.write(File.join(OUT, "results.json"), JSON.pretty_generate(json))
      File.write(File.join(OUT, "results.md"), markdown)
      Chart.new(runs, part("tasker_pgmq_throughput", "worker_rss_samples")).write(File.join(OUT, "results.png"))
    end

    def json
      {
        "generated_at" => Time.now.utc.iso8601, "wall_time_s" => @wall_time_s, "scenarios" => @scenarios,
        "failed_scenarios" => @failed, "machine" => machine, "runs" => runs, "ratios_vs_sidekiq" => ratios,
        "worker_rss_flatness" => rss_flat, "targets" => targets.map { |t| t.transform_keys(&:to_s) },
        "details" => @parts
      }
    end

    def markdown
      lines = ["| metric | value | reference | ratio vs Sidekiq |", "|---|---:|---|---:|"]
      runs.each do |name, value|
        lines << "| `#{name}` | #{shown(name, value)} | #{reference(name)} | " \
                 "#{ratios[name] ? "#{ratios[name]}x" : '-'} |"
      end
      lines += ["", "| target | measured | met |", "|---|---|---|"]
      targets.each { |t| lines << "| #{t[:name]} | #{t[:value] || 'n/a'} | #{met_text(t[:met])} |" }
      (lines + ["", *notes.map { |l| "#{l}  " }]).join("\n") << "\n"
    end

    private

    def machine
      @machine ||= Machine.describe(part("sidekiq_chain", "sidekiq_version"))
                          .merge("disk_fdatasync_8k_per_s" => @fdatasync_per_s)
    end

    def rss_steps
      ran = part("tasker_pgmq_throughput", "total_steps")
      wanted = part("tasker_pgmq_throughput", "target_steps")
      return "the long run (not run)" unless ran

      ran < wanted ? "#{ran} steps (#{wanted} wanted; stopped by the time budget)" : "#{ran} steps"
    end

    def shown(name, value)
      return "#{format_number(value)} #{METRICS[name].unit}" unless value.nil?

      @failed.include?(METRICS[name].part) ? "FAILED" : "not run"
    end

    def reference(name)
      sidekiq_rss = part("sidekiq_chain", "sidekiq_rss_peak_mb")
      return "#{METRICS[name].reference}; Sidekiq's peak: #{sidekiq_rss} MB" if name == "worker_rss_mb" && sidekiq_rss

      METRICS[name].reference
    end

    def met_text(met)
      return "n/a" if met.nil?

      met ? "yes" : "NO"
    end

    VACUUM_NOTE = ": the bench VACUUMs between throughput batches, untimed"

    def notes
      m = machine
      ["Run #{Time.now.utc.strftime('%Y-%m-%d %H:%M UTC')} at #{m['git_commit']} on #{m['cpus']} CPUs " \
       "(#{m['cpu_model']}), #{m['memory_gb']} GB, disk #{m['disk_fdatasync_8k_per_s']} fdatasyncs/s (8 kB); " \
       "#{m['postgresql']} (fsync #{m['fsync']}, synchronous_commit #{m['synchronous_commit']}, autovacuum " \
       "#{m['autovacuum']}#{VACUUM_NOTE if m['autovacuum'] == 'off'}); Ruby #{m['ruby']}; " \
       "Sidekiq #{m['sidekiq']} with Redis #{m['redis']}; RabbitMQ #{m['rabbitmq']}. " \
       "Total wall time #{(@wall_time_s / 60).round(1)} min.", *throughput_note].compact
    end

    def throughput_note
      pg = @parts["tasker_pgmq_throughput"] or return []
      rabbit = @parts["tasker_rabbitmq_throughput"]
      with_rabbit = rabbit ? ", #{rabbit['batches'].size} of #{rabbit['batches'].first['tasks']} with RabbitMQ" : ""
      ["Throughput: #{pg['batches'].size} batches of #{pg['batches'].first['tasks']} linear-4 tasks " \
       "(#{pg['total_steps']} steps) with PGMQ#{with_rabbit}; median batch reported. Worker RSS start/after " \
       "first batch/end/peak: #{pg['worker_rss_start_mb']}/#{pg['worker_rss_after_first_batch_mb']}/" \
       "#{pg['worker_rss_end_mb']}/#{pg['worker_rss_peak_mb']} MB."]
    end

    # The lower bounds the speed issue set (the targets above are its goals).
    def floors
      [["PGMQ steps/s >= 0.5x Sidekiq, one create_task a task", "tasker_pgmq_steps_per_s", 0.5],
       ["PGMQ steps/s >= 0.5x Sidekiq, both creating 100 at a time", "tasker_pgmq_bulk_steps_per_s", 0.5],
       ["RabbitMQ steps/s >= 0.4x Sidekiq, one create_task a task", "tasker_rabbitmq_steps_per_s", 0.4],
       ["RabbitMQ steps/s >= 0.4x Sidekiq, both creating 100 at a time", "tasker_rabbitmq_bulk_steps_per_s", 0.4]]
        .map { |name, metric, floor| target(name, ratios[metric]) { |r| r >= floor } } +
        [target("idle linear-4 p50 <= 5x Sidekiq's (interleaved)", ratios["idle_pair_tasker_p50_ms"]) { |r| r <= 5.0 }]
    end

    def target(name, value)
      met = value.nil? ? nil : yield(value)
      { name: name, value: value.is_a?(Float) ? "#{value}x" : value, met: met }
    end

    def format_number(value)
      return value.to_s unless value.is_a?(Numeric)

      whole, frac = format(value >= 100 ? "%.0f" : "%.2f", value).split(".")
      whole = whole.reverse.scan(/\d{1,3}/).join(",").reverse
      frac ? "#{whole}.#{frac}" : whole
    end
  end
end
