# frozen_string_literal: true

require_relative "support"

module Bench
  # PostgreSQL's cumulative statistics and the processes' CPU, before and
  # after a run, turned into figures per step (bench/profile.rb).
  class ProfileStats
    def initialize(deployment, admin)
      @deployment = deployment
      @admin = admin
      @conn = PG.connect(deployment.database_url)
    end

    def close
      @conn.close
    end

    def snapshot
      @conn.exec("SELECT pg_stat_clear_snapshot()")
      { database: row("SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted " \
                      "FROM pg_stat_database WHERE datname = current_database()"),
        wal: row("SELECT wal_records, wal_fpi, wal_bytes, wal_write, wal_sync FROM pg_stat_wal"),
        functions: keyed("SELECT funcname AS name, calls, total_time, self_time FROM pg_stat_user_functions"),
        tables: keyed("SELECT schemaname || '.' || relname AS name, n_tup_ins, n_tup_upd, n_tup_del, " \
                      "n_tup_hot_upd FROM pg_stat_user_tables"),
        cpu: cpu }
    end

    # CPU seconds by process: the worker, the orchestrator, and this
    # database's PostgreSQL backends grouped by application_name.
    def cpu
      apps = @admin.exec_params("SELECT pid, application_name FROM pg_stat_activity WHERE datname = $1",
                                [@deployment.database]).to_h { |r| [r["pid"].to_i, r["application_name"]] }
      backends = apps.each_with_object(Hash.new(0.0)) do |(pid, app), sum|
        sum["postgres backends (#{app.empty? ? 'unnamed' : app})"] += Bench.cpu_seconds(pid)
      rescue Errno::ENOENT
        next
      end
      { "worker (Ruby + Rust)" => Bench.cpu_seconds(@deployment.worker_pid),
        "orchestrator (Rust)" => Bench.cpu_seconds(@deployment.orchestrator_pid) }.merge(backends)
    end

    DATABASE_KEYS = %w[xact_commit xact_rollback tup_inserted tup_updated tup_deleted].freeze
    WAL_KEYS = %w[wal_records wal_fpi wal_bytes wal_write wal_sync].freeze
    TABLE_KEYS = %w[n_tup_ins n_tup_upd n_tup_del n_tup_hot_upd].freeze
    FUNCTION_KEYS = %w[calls total_time self_time].freeze

    def per_step(before, after, steps)
      @steps = steps
      { steps: steps, database: deltas(before[:database], after[:database], DATABASE_KEYS),
        wal_cluster_wide: deltas(before[:wal], after[:wal], WAL_KEYS),
        functions: changes(before[:functions], after[:functions], FUNCTION_KEYS).sort_by { |f| -f["total_time"] },
        tables: changes(before[:tables], after[:tables], TABLE_KEYS).select { |t| written?(t) },
        cpu_ms: cpu_per_step(before[:cpu], after[:cpu], steps) }
    end

    def cpu_per_step(before, after, steps)
      after.to_h { |k, v| [k, ((v - before.fetch(k, 0.0)) * 1000 / steps).round(3)] }.sort_by { |_, v| -v }.to_h
    end

    private

    def written?(table)
      table.values_at("n_tup_ins", "n_tup_upd", "n_tup_del").sum.positive?
    end

    def row(sql)
      @conn.exec(sql)[0]
    end

    def keyed(sql)
      @conn.exec(sql).to_h { |r| [r["name"], r] }
    end

    # (after - before) / steps for each key.
    def deltas(before, after, keys)
      keys.to_h { |k| [k, ((after[k].to_f - before.fetch(k, 0).to_f) / @steps).round(4)] }
    end

    def changes(before, after, keys)
      after.map { |name, now| deltas(before.fetch(name, {}), now, keys).merge("name" => name) }
    end
  end

  # Every statement the bench's processes send to one database, from the
  # server log (log_min_duration_statement = 0 on that database), grouped
  # by process (application_name, looked up by backend pid) and statement.
  class StatementLog
    SERVER_LOG = ENV.fetch("BENCH_PG_LOG", "/var/log/postgresql/postgresql-15-main.log")

    def initialize(database)
      @database = database
      @apps = {}
      @line = /\[(\d+)\] \S+@#{Regexp.escape(database)} LOG:  duration: ([\d.]+) ms  (\w+)[^:]*: (.*)/
    end

    def start
      @offset = File.size(SERVER_LOG)
      @watcher = Thread.new do
        Bench.with_pg(PG_ADMIN_URL) do |conn|
          loop do
            conn.exec_params("SELECT pid, application_name FROM pg_stat_activity WHERE datname = $1", [@database])
                .each { |r| @apps[r["pid"]] = r["application_name"] }
            sleep 0.2
          end
        end
      end
    end

    def stop
      @watcher.kill
    end

    def per_step(steps)
      groups = Hash.new { |h, k| h[k] = [0, 0.0] }
      each_statement do |app, ms, sql|
        group = groups[[app, sql]]
        group[0] += 1
        group[1] += ms
      end
      rows = groups.map do |(app, sql), (count, ms)|
        { process: app, sql: sql, per_step: (count.to_f / steps).round(3), server_ms_per_step: (ms / steps).round(4),
          mean_ms: (ms / count).round(3) }
      end
      rows.sort_by { |g| -g[:server_ms_per_step] }
    end

    private

    # Yields (process, server ms, statement) for each round trip: parse and
    # bind are logged apart from their execute but travel with it.
    def each_statement
      File.open(SERVER_LOG) do |log|
        log.seek(@offset)
        log.each_line do |line|
          m = @line.match(line)
          next unless m && %w[execute statement].include?(m[3])

          app = @apps.fetch(m[1], "unknown")
          yield app, m[2].to_f, m[4].gsub(/\s+/, " ")[0, 110]
        end
      end
    end
  end
end
