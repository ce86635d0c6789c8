# frozen_string_literal: true

# The floor under the PGMQ throughput of linear-4 workflows on this
# machine, measured without tasker_core's code (`bin/bench flow_floor`, or
# on its own: `ruby -Ilib bench/flow_floor.rb`, under a minute). pgbench
# runs, from BENCH_CONCURRENCY (10) connections, the rows the revised data
# flow (DESIGN.md) writes for linear-4 tasks, as plain prepared statements
# on tasker_core's own tables, indexes and CHECK constraints, in a database
# of its own:
# - creation, one durable transaction: the task, its history row, four
#   steps, three edges, five step history rows, the root's PGMQ message
#   (with the queue's NOTIFY trigger);
# - the root's claim, one transaction: the message read (PGMQ's UPDATE) and
#   the step to in progress with its history row;
# - each step's outcome, one transaction that does not wait for the disk
#   (as the engine's): the step complete with its history row, the next
#   step's readiness (its dependencies through the edges), and the next
#   step claimed with its history row (the eager path); the first outcome
#   acks the message; the last ends the task with its history row and the
#   notification to its waiters.
# Once with one task per transaction, once with ten tasks written by each
# statement together (the engine batches outcomes). No plpgsql, no Ruby,
# no handler, no worker. What it reports (steps/s, and PostgreSQL's CPU per
# step from /proc) is what PostgreSQL alone costs for the data the flow
# keeps: the floor under what the engine can reach here. The report quotes
# the better of the two as a ratio to the same run's Sidekiq.
require "json"
require "open3"
require_relative "tasker_support"

module Bench
  class FlowFloor
    DATABASE = "tasker_bench_flow_floor"
    QUEUE = "flow_floor"

    def initialize
      # As long as one of the engine's throughput batches, each measured
      # after a VACUUM as those are (this server may run without
      # autovacuum; dead rows of the runs before slow every update).
      @seconds = Bench.env_int("BENCH_FLOOR_SECONDS", 10)
      @clients = Bench.env_int("BENCH_CONCURRENCY", 10)
    end

    def run
      url = prepare
      template, named = catalogue(url)
      result = { clients: @clients, seconds: @seconds }
      BATCHES.each do |batch|
        script = File.join(OUT, "flow_floor_#{batch}.sql")
        File.write(script, pgbench_script(template, named, batch))
        result["batch_#{batch}"] = measure(url, script, batch)
      end
      # The floor: the better of the two.
      best = result.values_at(*BATCHES.map { |b| "batch_#{b}" }).max_by { |r| r[:steps_per_s] }
      Bench.write_part("flow_floor", result.merge(steps_per_s: best[:steps_per_s],
                                                  postgres_cpu_ms_per_step: best[:postgres_cpu_ms_per_step]))
      # What it wrote is not left for the next scenario's commits to wait on.
      Bench.with_pg(url) { |conn| conn.exec("CHECKPOINT") }
    end

    private

    # Tasks per pgbench transaction: one at a time per connection, or ten
    # written by each statement together (as the engine batches outcomes).
    BATCHES = [1, 10].freeze

    def measure(url, script, batch)
      run_pgbench(url, script, 3) # warm-up: caches, plans, the tables' first pages
      Bench.with_pg(url) { |conn| conn.exec("VACUUM (ANALYZE)") }
      run = Thread.new { run_pgbench(url, script, @seconds) }
      # CPU and tasks done over the middle of the run (pgbench's backends
      # exist only while it runs).
      sleep 2
      before = sample(url)
      sleep @seconds - 4
      after = sample(url)
      tps = run.value
      steps = (after[:done] - before[:done]) * 4
      cpu = after[:cpu].sum { |pid, s| s - before[:cpu].fetch(pid, 0.0) }
      { tasks_per_s: (tps * batch).round(1), steps_per_s: (tps * batch * 4).round(1),
        postgres_cpu_ms_per_step: (cpu * 1000 / steps).round(3) }
    end

    def prepare
      url = Bench.recreate_database(DATABASE)
      TaskerCore.configure do |c|
        c.database_url = url
        c.template_paths = TEMPLATE_PATHS
        c.messaging_provider = :pgmq
      end
      TaskerCore.logger.level = Logger::WARN
      TaskerCore.migrate!
      TaskerCore.register_templates!
      Bench.with_pg(url) do |conn|
        conn.exec("SELECT pgmq.create('#{QUEUE}')")
        conn.exec("SELECT tasker_install_queue('#{QUEUE}')")
      end
      ActiveRecord::Base.connection_handler.clear_all_connections!
      url
    end

    # The linear4 template's id and its steps' named step ids, in order.
    def catalogue(url)
      Bench.with_pg(url) do |conn|
        template = conn.exec_params("SELECT template_id FROM tasker_task_templates WHERE namespace = $1 " \
                                    "AND name = 'linear4'", [NAMESPACE]).getvalue(0, 0)
        named = conn.exec_params("SELECT named_step_id FROM tasker_named_steps WHERE template_id = $1 " \
                                 "ORDER BY position", [template]).map { |r| r["named_step_id"] }
        raise "expected the linear4 template's 4 named steps, found #{named.size}" unless named.size == 4

        [template, named]
      end
    end

    # One pgbench transaction: `batch` tasks' whole lives. Each task's uuid
    # and its steps' are arrays (t, s1..s4: element k is task k's), each
    # statement writes the rows of all of them (unnest), and each
    # transaction of the flow is one here.
    def pgbench_script(template, named, batch)
      ids = %w[t s1 s2 s3 s4].map do |v|
        "(SELECT array_agg(gen_random_uuid()) FROM generate_series(1, #{batch}))::text AS #{v}"
      end
      script = [
        "SELECT #{ids.join(', ')} \\gset",
        "BEGIN;",
        creation(template, named),
        "END;",
        "BEGIN;",
        "SET LOCAL synchronous_commit = off;",
        "UPDATE pgmq.q_#{QUEUE} SET vt = clock_timestamp() + interval '30 s', read_ct = read_ct + 1, " \
        "last_read_at = clock_timestamp() WHERE msg_id = ANY (:msg_ids::bigint[]);",
        claim(1, "enqueued", 3),
        "END;",
        *(1..4).map { |i| outcome(i) }
      ]
      "#{script.join("\n")}\n"
    end

    def rows(*arrays)
      "unnest(#{arrays.map { |a| ":#{a}::uuid[]" }.join(', ')})"
    end

    def creation(template, named)
      steps = (0..3).map do |i|
        root = i.zero?
        "SELECT s, t, #{named[i]}, 'step_#{i + 1}', #{i}, '#{root ? 'enqueued' : 'pending'}', #{root ? 2 : 1}, 3, " \
          "#{root ? 'clock_timestamp()' : 'NULL::timestamptz'} FROM #{rows(:t, "s#{i + 1}")} AS u(t, s)"
      end
      <<~SQL.strip
        INSERT INTO tasker_tasks (task_uuid, template_id, namespace, name, version, status, transitions, correlation_id)
          SELECT t, #{template}, '#{NAMESPACE}', 'linear4', '1.0.0', 'in_progress', 2, t FROM #{rows(:t)} AS u(t);
        INSERT INTO tasker_task_transitions (task_uuid, sort_key, from_state, to_state)
          SELECT t, k, (ARRAY['', 'pending'])[k], (ARRAY['pending', 'in_progress'])[k]
            FROM #{rows(:t)} AS u(t), generate_series(1, 2) AS k;
        INSERT INTO tasker_workflow_steps (step_uuid, task_uuid, named_step_id, name, position, status, transitions,
                                           max_attempts, enqueued_at)
          #{steps.join(' UNION ALL ')};
        INSERT INTO tasker_workflow_step_edges (task_uuid, from_step_uuid, to_step_uuid)
          #{(1..3).map { |i| "SELECT t, a, b FROM #{rows(:t, "s#{i}", "s#{i + 1}")} AS u(t, a, b)" }.join(' UNION ALL ')};
        INSERT INTO tasker_workflow_step_transitions (step_uuid, sort_key, from_state, to_state)
          SELECT s, 1, '', 'pending' FROM #{rows(:s1)} AS u(s) UNION ALL
          SELECT s, 2, 'pending', 'enqueued' FROM #{rows(:s1)} AS u(s) UNION ALL
          #{(2..4).map { |i| "SELECT s, 1, '', 'pending' FROM #{rows("s#{i}")} AS u(s)" }.join(' UNION ALL ')};
        WITH sent AS (
          INSERT INTO pgmq.q_#{QUEUE} (vt, message)
            SELECT clock_timestamp(), jsonb_build_object('task_uuid', t, 'step_uuid', s) FROM #{rows(:t, :s1)} AS u(t, s)
          RETURNING msg_id)
        SELECT array_agg(msg_id)::text AS msg_ids FROM sent \\gset
      SQL
    end

    # Step `position` (1-4) of every task to in progress, from `from`.
    def claim(position, from, sort_key)
      "UPDATE tasker_workflow_steps SET status = 'in_progress', transitions = transitions + 1, " \
        "attempts = attempts + 1, started_at = clock_timestamp(), heartbeat_at = clock_timestamp(), " \
        "updated_at = clock_timestamp() " \
        "WHERE step_uuid = ANY (:s#{position}::uuid[]);\n" \
        "INSERT INTO tasker_workflow_step_transitions (step_uuid, sort_key, from_state, to_state, metadata) " \
        "SELECT s, #{sort_key}, '#{from}', 'in_progress', '{\"worker\": \"floor\", \"attempt\": 1}' " \
        "FROM #{rows("s#{position}")} AS u(s);"
    end

    # Step i's outcome, and the eager claim of step i + 1 (or the task's end).
    def outcome(i) # rubocop:disable Naming/MethodParameterName
      lines = ["BEGIN;", "SET LOCAL synchronous_commit = off;",
               "UPDATE tasker_workflow_steps SET status = 'complete', transitions = transitions + 1, " \
               "results = '{\"ok\": true}', completed_at = clock_timestamp(), updated_at = clock_timestamp() " \
               "WHERE step_uuid = ANY (:s#{i}::uuid[]);",
               "INSERT INTO tasker_workflow_step_transitions (step_uuid, sort_key, from_state, to_state) " \
               "SELECT s, #{i == 1 ? 4 : 3}, 'in_progress', 'complete' FROM #{rows("s#{i}")} AS u(s);"]
      lines << "DELETE FROM pgmq.q_#{QUEUE} WHERE msg_id = ANY (:msg_ids::bigint[]);" if i == 1
      if i < 4
        lines << "SELECT count(*) FROM tasker_workflow_step_edges e JOIN tasker_workflow_steps p " \
                 "ON p.step_uuid = e.from_step_uuid WHERE e.to_step_uuid = ANY (:s#{i + 1}::uuid[]) " \
                 "AND p.status <> 'complete';"
        lines << claim(i + 1, "pending", 2)
      else
        lines << "UPDATE tasker_tasks SET status = 'complete', transitions = transitions + 1, " \
                 "completed_at = clock_timestamp(), updated_at = clock_timestamp() WHERE task_uuid = ANY (:t::uuid[]);"
        lines << "INSERT INTO tasker_task_transitions (task_uuid, sort_key, from_state, to_state) " \
                 "SELECT t, 3, 'in_progress', 'complete' FROM #{rows(:t)} AS u(t);"
        lines << "SELECT pg_notify('tasker_task_finished', t::text || ' complete') FROM #{rows(:t)} AS u(t);"
      end
      (lines << "END;").join("\n")
    end

    def run_pgbench(url, script, seconds)
      Bench.pgbench_tps(url, script, seconds: seconds, clients: @clients)
    end

    # Tasks complete so far, and the CPU seconds of each PostgreSQL process
    # working for this database (its backends) or for every database (WAL
    # writer, checkpointer, background writer).
    def sample(url)
      done = Bench.with_pg(url) do |conn|
        conn.exec("SELECT count(*) FROM tasker_tasks WHERE status = 'complete'").getvalue(0, 0).to_i
      end
      { done: done, cpu: Bench.postgres_cpu_seconds(DATABASE) }
    end
  end

  # pgbench's transactions per second running `script` (prepared
  # statements) from `clients` connections for `seconds`.
  def self.pgbench_tps(url, script, seconds:, clients:)
    out, status = Open3.capture2e("pgbench", "-n", "-M", "prepared", "-c", clients.to_s, "-j", "2",
                                  "-T", seconds.to_s, "-f", script, url)
    raise "pgbench failed:\n#{out}" unless status.success?

    Float(out[/^tps = ([\d.]+)/, 1] || raise("no tps in pgbench's output:\n#{out}"))
  end

  SERVER_PROCESSES = ["walwriter", "checkpointer", "background writer"].freeze

  # { pid => CPU seconds so far } of the PostgreSQL backends connected to
  # `database` and of the server's own writers.
  def self.postgres_cpu_seconds(database)
    Dir.glob("/proc/[0-9]*").each_with_object({}) do |dir, cpu|
      title = File.read(File.join(dir, "cmdline")).tr("\0", " ")
      next unless title.start_with?("postgres: ")
      next unless title.include?(" #{database} ") || SERVER_PROCESSES.any? { |p| title.include?(p) }

      fields = File.read(File.join(dir, "stat")).split(") ", 2).last.split
      cpu[dir] = (fields[11].to_i + fields[12].to_i) / Etc.sysconf(Etc::SC_CLK_TCK).to_f
    rescue Errno::ENOENT, Errno::ESRCH
      next
    end
  end
end

Bench::FlowFloor.new.run
