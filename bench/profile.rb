# frozen_string_literal: true

# Profiles the PGMQ hot path (not part of `rake bench`; run it on its own):
#   ruby -Ilib bench/profile.rb    # about 2 minutes
# on its own database (tasker_bench_profile), with the same deployment as
# the bench (tasker-orchestrator binary + rake tasker:worker, concurrency
# 10). Three phases:
# 1. latency: BENCH_PROFILE_LATENCY idle linear-4 tasks one at a time; each
#    hop of each step timed from the transition rows' clock_timestamp()s;
# 2. counters: BENCH_PROFILE_TASKS tasks at once; per step: transactions
#    (pg_stat_database), WAL records/bytes/flushes (pg_stat_wal, the whole
#    cluster), rows written per table, calls and time of every SQL function
#    (track_functions = 'pl'), CPU of every process (worker, orchestrator,
#    PostgreSQL backends by application_name);
# 3. statements: BENCH_PROFILE_LOGGED_TASKS tasks at once with
#    log_min_duration_statement = 0 on this database only; the server log
#    gives every statement each process sent, with its server-side time.
# Writes target/bench/profile.json and prints it.
require "time"
require_relative "tasker_support"
require_relative "profile_stats"

module Bench
  class Profile
    DATABASE = "tasker_bench_profile"

    def initialize
      @latency_reps = Bench.env_int("BENCH_PROFILE_LATENCY", 200)
      @tasks = Bench.env_int("BENCH_PROFILE_TASKS", 2000)
      @logged_tasks = Bench.env_int("BENCH_PROFILE_LOGGED_TASKS", 300)
      @admin = PG.connect(PG_ADMIN_URL)
    end

    def run
      deployment = TaskerDeployment.new(provider: :pgmq, database: DATABASE, settings: { track_functions: "pl" })
      deployment.start
      deployment.warm_up(100)
      result = { latency_hops_ms: latency(deployment), per_step: counters(deployment) }
      deployment.stop
      result[:statements_per_step] = statements
      File.write(File.join(OUT, "profile.json"), JSON.pretty_generate(result))
      puts JSON.pretty_generate(result)
    ensure
      deployment&.stop if deployment&.worker_pid
      @admin.exec("ALTER DATABASE #{DATABASE} RESET log_min_duration_statement")
    end

    private

    # ---- phase 1 -------------------------------------------------------------

    # [name, from state offset, to state offset] for each step p; offsets
    # are [step position delta, state]. Step 1 comes through the queue;
    # each later one is claimed eagerly by the outcome of the one before.
    STEP_HOPS = [
      ["claimed -> complete recorded (hand-off to Ruby, AR models, handler, outcome statement)",
       [0, "in_progress"], [0, "complete"]],
      ["complete -> next claimed eagerly (same statement)", [0, "complete"], [1, "in_progress"]]
    ].freeze

    HOPS = [
      ["driver: create_task call until the task row's transaction began", :t0, :created],
      ["creation: task row until step 1 enqueued (same transaction)", :created, [0, "enqueued"]],
      ["step 1 enqueued -> claimed (commit, NOTIFY, worker read, claim)", [0, "enqueued"], [0, "in_progress"]],
      *(0..3).flat_map do |p|
        STEP_HOPS.filter_map do |name, (df, sf), (dt, st)|
          ["step #{p + 1}: #{name}", [p + df, sf], [p + dt, st]] if p + dt <= 3
        end
      end,
      ["last step complete -> task complete (same statement)", [3, "complete"], :finished],
      ["task complete -> the driver's wait returns (commit, NOTIFY, reload)", :finished, :t1],
      ["total, as the driver saw it", :t0, :t1]
    ].freeze

    # [task uuid, when create_task was called, when wait returned] of
    # tasks run one at a time.
    def idle_runs(deployment)
      Array.new(@latency_reps) do
        t0 = Time.now
        task = deployment.create_task("linear4").wait(timeout: 30)
        raise "task #{task.task_uuid} ended #{task.status}" unless task.complete?

        [task.task_uuid, t0, Time.now]
      end
    end

    def latency(deployment)
      runs = idle_runs(deployment)
      conn = PG.connect(deployment.database_url)
      hops = Hash.new { |h, k| h[k] = [] }
      runs.each do |uuid, t0, t1|
        at = moments(conn, uuid).merge(t0: t0, t1: t1)
        HOPS.each { |name, from, to| hops[name] << (at.fetch(to) - at.fetch(from)) }
      end
      conn.close
      hops.transform_values { |v| { median: (Bench.median(v) * 1000).round(3), count: v.size } }
    end

    # When the task was created and finished, and when each step entered
    # each state ([position, state] => Time).
    def moments(conn, uuid)
      created, finished = conn.exec_params("SELECT created_at, completed_at FROM tasker_tasks WHERE task_uuid = $1",
                                           [uuid]).values.first.map { |v| Time.parse(v) }
      steps = conn.exec_params(<<~SQL, [uuid]).to_a
        SELECT s.position, t.to_state, t.created_at FROM tasker_workflow_step_transitions t
          JOIN tasker_workflow_steps s USING (step_uuid) WHERE s.task_uuid = $1
      SQL
      steps.to_h { |r| [[r["position"].to_i, r["to_state"]], Time.parse(r["created_at"])] }
           .merge(created: created, finished: finished)
    end

    # ---- phase 2 -------------------------------------------------------------

    def counters(deployment)
      stats = ProfileStats.new(deployment, @admin)
      before = stats.snapshot
      uuids = deployment.create_tasks("linear4", @tasks)
      deployment.wait_until_idle(timeout: 600)
      steps = deployment.verify!(uuids, steps_per_task: 4)
      cpu_after = stats.cpu
      sleep 11 # idle backends flush their statistics within 10 s
      after = stats.snapshot.merge(cpu: cpu_after)
      stats.close
      stats.per_step(before, after, steps)
    end

    # ---- phase 3 -------------------------------------------------------------

    def statements
      @admin.exec("ALTER DATABASE #{DATABASE} SET log_min_duration_statement = 0")
      deployment = TaskerDeployment.new(provider: :pgmq, database: DATABASE, recreate: false)
      deployment.start
      deployment.warm_up(20)
      log = StatementLog.new(DATABASE)
      log.start
      uuids = deployment.create_tasks("linear4", @logged_tasks)
      deployment.wait_until_idle(timeout: 600)
      steps = deployment.verify!(uuids, steps_per_task: 4)
      sleep 0.5
      log.stop
      deployment.stop
      @admin.exec("ALTER DATABASE #{DATABASE} RESET log_min_duration_statement")
      log.per_step(steps)
    end
  end
end

Bench::Profile.new.run
