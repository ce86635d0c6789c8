# frozen_string_literal: true

# Throughput of many 4-step linear workflows, in steps per second: each
# batch submits BENCH_TASKS tasks at once (4 creating threads) and is timed
# from the first creation to the last task complete; the median over the
# batches is reported. Batches repeat (at least BENCH_BATCHES of them) until
# BENCH_TOTAL_STEPS steps have run or the next batch would end after
# BENCH_DEADLINE (epoch seconds, set by the conductor to keep the whole
# bench under 25 minutes). With PGMQ this is also the long run across which
# the worker's memory is sampled. When the server runs without autovacuum,
# the database is vacuumed between batches (not timed).
# BENCH_BULK_SIZE=N creates each batch's tasks N at a time from one
# thread, N per statement (TaskerCore.create_tasks); its figure is compared
# with sidekiq_chain_bulk's, whose chains are pushed N at a time.
# BENCH_ORCHESTRATOR=0 runs the worker alone: workers advance their own
# tasks, so nothing on the hot path needs the orchestrator. Each batch also
# reports rows written and WAL records per step (statistics are flushed
# when a backend's transaction ends, so figures are within a few rows).
#   PROVIDER=pgmq|rabbitmq [BENCH_ORCHESTRATOR=0] ruby -Ilib bench/tasker_throughput.rb
require_relative "tasker_support"

provider = ENV.fetch("PROVIDER", "pgmq")
min_batches = Bench.env_int("BENCH_BATCHES", 3)
tasks_per_batch = Bench.env_int("BENCH_TASKS", 2500)
total_steps = Bench.env_int("BENCH_TOTAL_STEPS", 100_000)
deadline = ENV["BENCH_DEADLINE"] && Float(ENV["BENCH_DEADLINE"])
with_orchestrator = ENV.fetch("BENCH_ORCHESTRATOR", "1") != "0"
deployment = Bench::TaskerDeployment.new(provider: provider, orchestrator: with_orchestrator)
bulk = ENV["BENCH_BULK_SIZE"] && Integer(ENV["BENCH_BULK_SIZE"])
part = "tasker_#{provider}_throughput#{'_no_orchestrator' unless with_orchestrator}#{'_bulk' if bulk}"

begin
  deployment.start
  warmup = Bench.env_int("BENCH_WARMUP_TASKS", 250)
  deployment.warm_up(warmup)
  worker = deployment.worker_pid
  started = Bench.monotonic
  memory = [{ t: 0.0, steps: 0 }.merge(Bench.memory(worker))]
  steps_done = 0
  # Memory once a second, with the steps of the tasks completed so far (its
  # own connection: a PG::Connection is not shared between threads).
  sampler = Thread.new do
    conn = PG.connect(deployment.database_url)
    loop do
      sleep 1
      done = conn.exec("SELECT count(*) FROM tasker_tasks WHERE status = 'complete'").getvalue(0, 0).to_i
      memory << { t: Bench.monotonic - started, steps: (done - warmup) * 4 }.merge(Bench.memory(worker))
    end
  ensure
    conn&.close
  end
  results = []
  loop do
    i = results.size
    cpu_before = deployment.cpu_snapshot
    writes_before = deployment.write_counters
    t0 = Bench.monotonic
    uuids = deployment.create_tasks("linear4", tasks_per_batch, bulk: bulk)
    created = Bench.monotonic - t0
    deployment.wait_until_idle(timeout: 900)
    elapsed = Bench.monotonic - t0
    cpu = deployment.cpu_delta(cpu_before, deployment.cpu_snapshot)
    writes = Bench.writes_since(deployment, writes_before)
    steps = deployment.verify!(uuids, steps_per_task: 4)
    steps_done += steps
    memory << { t: Bench.monotonic - started, steps: steps_done }.merge(Bench.memory(worker))
    vacuum_s = deployment.vacuum_if_no_autovacuum # between batches, outside the timed window
    result = { tasks: uuids.size, steps: steps, seconds: elapsed.round(3), vacuum_after_s: vacuum_s,
               steps_per_s: (steps / elapsed).round(1), creation_tasks_per_s: (uuids.size / created).round(1),
               cpu_ms_per_step: cpu.transform_values { |s| (s * 1000 / steps).round(3) },
               rows_per_step: (writes[:rows].to_f / steps).round(2),
               wal_records_per_step: (writes[:wal_records].to_f / steps).round(1),
               wal_bytes_per_step: (writes[:wal_bytes] / steps) }
    Bench.log "#{provider} batch #{i + 1}: #{result}"
    results << result
    next if results.size < min_batches
    break if steps_done >= total_steps
    break if deadline && Time.now.to_f + (elapsed * 1.2) > deadline
  end
  sampler.kill
  final = Bench.memory(worker)
  after_first = memory.find { |m| m[:steps] >= results.first[:steps] }
  data = {
    provider: provider, concurrency: deployment.concurrency, bulk_size: bulk, batches: results,
    steps_per_s: Bench.median(results.map { |r| r[:steps_per_s] }),
    rows_per_step: Bench.median(results.map { |r| r[:rows_per_step] }),
    wal_records_per_step: Bench.median(results.map { |r| r[:wal_records_per_step] }),
    wal_bytes_per_step: Bench.median(results.map { |r| r[:wal_bytes_per_step] }),
    total_steps: steps_done, target_steps: total_steps, all_tasks_complete: true,
    worker_rss_start_mb: memory.first[:rss_mb].round(1), worker_rss_after_first_batch_mb: after_first[:rss_mb].round(1),
    worker_rss_end_mb: final[:rss_mb].round(1), worker_rss_peak_mb: final[:hwm_mb].round(1),
    worker_rss_samples: memory.map { |m| { t: m[:t].round(1), steps: m[:steps], rss_mb: m[:rss_mb].round(1) } }
  }
  deployment.stop
  Bench.write_part(part, data)
ensure
  deployment.stop if deployment.worker_pid
end
