# frozen_string_literal: true

# The floor under any PGMQ design: raw single-message PGMQ operations, the
# same SQL calls the core makes (pgmq.send, pgmq.read, pgmq.delete), each
# its own autocommit transaction (fsync on commit), with BENCH_PGMQ_PAIRS
# producer processes and as many consumer processes at once. Producers
# send as fast as they can; consumers read one message and delete it.
# A round trip is one message sent, read and deleted; the consumers' rate
# is therefore the round-trip rate. Reported: the median over
# BENCH_PGMQ_WINDOWS windows of BENCH_PGMQ_WINDOW_S seconds, after a
# warm-up.
#
# Ruby with libpq (the pg gem) drives it, one process per connection, so
# there is no GVL between them; each child reports the CPU it used, which
# shows the client is not the bottleneck (see cpu_share_of_one_core).
#   ruby -Ilib bench/pgmq_raw.rb
require "tasker_core"
require_relative "support"

pairs = Bench.env_int("BENCH_PGMQ_PAIRS", 4)
windows = Bench.env_int("BENCH_PGMQ_WINDOWS", 3)
window_s = Float(ENV.fetch("BENCH_PGMQ_WINDOW_S", "5"))
warmup_s = 2.0
queue = "bench_raw"

url = Bench.recreate_database("tasker_bench")
TaskerCore.configure { |c| c.database_url = url }
TaskerCore.migrate! # installs PGMQ's SQL from the pgmq crate, as the engine does
Bench.with_pg(url) { |conn| conn.exec_params("SELECT pgmq.create($1)", [queue]) }

start = Bench.monotonic + 1.0 # every child connects first
measure_from = start + warmup_s
stop = measure_from + (windows * window_s)

# Runs `op` until `stop`; returns [ops per window, CPU seconds while measuring].
run_child = lambda do |op|
  conn = PG.connect(url)
  counts = Array.new(windows, 0)
  sleep [start - Bench.monotonic, 0].max
  cpu0 = nil
  while (now = Bench.monotonic) < stop
    cpu0 ||= Process.clock_gettime(Process::CLOCK_PROCESS_CPUTIME_ID) if now >= measure_from
    done = op.call(conn)
    counts[((now - measure_from) / window_s).floor] += 1 if done && now >= measure_from
  end
  [counts, Process.clock_gettime(Process::CLOCK_PROCESS_CPUTIME_ID) - (cpu0 || 0)]
ensure
  conn&.close
end

send_op = lambda do |conn|
  conn.exec_params("SELECT * FROM pgmq.send(queue_name => $1::text, msg => $2::jsonb)", [queue, '{"n":1}'])
  true
end
consume_op = lambda do |conn|
  read = conn.exec_params("SELECT msg_id FROM pgmq.read(queue_name => $1::text, vt => 30, qty => 1)", [queue])
  next false if read.ntuples.zero?

  conn.exec_params("SELECT pgmq.delete(queue_name => $1::text, msg_id => $2::bigint)", [queue, read.getvalue(0, 0)])
  true
end

children = %i[send consume].flat_map do |role|
  Array.new(pairs) do
    reader, writer = IO.pipe
    pid = fork do
      reader.close
      writer.write(JSON.generate(run_child.call(role == :send ? send_op : consume_op)))
      writer.close
      exit!(0)
    end
    writer.close
    [role, pid, reader]
  end
end
results = children.map do |role, pid, reader|
  counts, cpu = JSON.parse(reader.read)
  _, status = Process.wait2(pid)
  raise "#{role} process #{pid} failed: #{status.inspect}" unless status.success?

  [role, counts, cpu]
end

per_window = lambda do |role|
  Array.new(windows) { |w| results.select { |r, _, _| r == role }.sum { |_, counts, _| counts[w] } / window_s }
end
sends = per_window.call(:send)
consumed = per_window.call(:consume)
client_cpu = results.sum { |_, _, cpu| cpu }
backlog = Bench.with_pg(url) { |conn| conn.exec("SELECT count(*) FROM pgmq.q_#{queue}").getvalue(0, 0).to_i }
Bench.write_part("pgmq_raw", {
                   producers: pairs, consumers: pairs, windows: windows, window_s: window_s,
                   sends_per_s: Bench.median(sends).round(1), read_delete_per_s: Bench.median(consumed).round(1),
                   roundtrips_per_s: Bench.median(consumed).round(1),
                   sends_per_window: sends.map { |v| v.round(1) }, read_delete_per_window: consumed.map do |v|
                                                                                             v.round(1)
                                                                                           end,
                   backlog_at_end: backlog,
                   client_cpu_share_of_one_core: (client_cpu / (windows * window_s)).round(3)
                 })
