# frozen_string_literal: true

# The idle floor of one queue hop on this machine, measured without
# tasker_core (not part of `rake bench`; run it on its own, about 20 s):
#   ruby bench/hop_floor.rb
# Two processes play ping-pong on two PGMQ-shaped queue tables in the
# bench's own database, each hop the least DESIGN.md's data flow asks of a
# hand-off: the sender inserts a message and commits (NOTIFY goes out with
# the commit); the receiver, woken by the notification, reads the message
# (an UPDATE of its visibility, as PGMQ's read) and deletes it (the ack).
# Reported, as p50/p90 of one hop (half a round trip), over
# BENCH_HOP_ROUNDS round trips after a warm-up:
# - notify: a bare NOTIFY ping-pong, no table: the wake-up alone;
# - durable: every commit waits for the disk (synchronous_commit = on);
# - asynchronous: no commit waits (the least any design can pay here).
# An idle 4-step linear task pays two durable hops whatever the engine does
# between them: its creation's commit and message to the worker, and the
# commit that ends it with the notification back to the caller waiting on
# it. The steps in between run eagerly in the worker, with outcomes that do
# not wait for the disk (the asynchronous row is what such a hop would
# cost). Two durable hops are the floor under its idle latency here.
require_relative "support"

rounds = Bench.env_int("BENCH_HOP_ROUNDS", 1500)
warmup = 100
url = Bench.recreate_database("tasker_bench_floor")
Bench.with_pg(url) do |conn|
  %w[hop_a hop_b].each do |table|
    conn.exec(<<~SQL)
      CREATE TABLE #{table} (msg_id bigserial PRIMARY KEY, read_ct integer NOT NULL DEFAULT 0,
                             vt timestamptz NOT NULL DEFAULT clock_timestamp(), message jsonb NOT NULL);
      CREATE INDEX ON #{table} (vt);
    SQL
  end
end

# One side of the ping-pong, on its own connection.
class HopPlayer
  def initialize(url, mode, mine, theirs)
    @mode = mode
    @mine = mine
    @theirs = theirs
    @conn = PG.connect(url)
    @conn.exec("SET synchronous_commit = #{mode == :durable ? 'on' : 'off'}")
    @conn.exec("LISTEN #{mine}")
    @conn.prepare("send", "INSERT INTO #{theirs} (message) VALUES ($1)")
    @conn.prepare("read", "UPDATE #{mine} m SET read_ct = m.read_ct + 1, vt = clock_timestamp() + interval '30 s' " \
                          "WHERE m.msg_id = ANY(ARRAY(SELECT msg_id FROM #{mine} WHERE vt <= clock_timestamp() " \
                          "ORDER BY msg_id LIMIT 1 FOR UPDATE SKIP LOCKED)) RETURNING m.msg_id")
    @conn.prepare("ack", "DELETE FROM #{mine} WHERE msg_id = $1")
  end

  # Waits for the other side's message and answers it, `count` times (the
  # first side sends first); returns the round-trip times (ms) it saw.
  def play(count, first:)
    Array.new(count) do
      t0 = Bench.monotonic
      send_one if first
      receive_one
      send_one unless first
      (Bench.monotonic - t0) * 1000
    end
  ensure
    @conn.close
  end

  private

  def send_one
    return @conn.exec("NOTIFY #{@theirs}") if @mode == :notify

    @conn.transaction do |tx|
      tx.exec_prepared("send", ['{"task_uuid": "00000000-0000-0000-0000-000000000000"}'])
      tx.exec("NOTIFY #{@theirs}")
    end
  end

  def receive_one
    loop do
      @conn.wait_for_notify(10) or raise "no notification within 10 s (#{@mode})"
      return if @mode == :notify

      read = @conn.exec_prepared("read")
      next if read.ntuples.zero?

      return @conn.exec_prepared("ack", [read.getvalue(0, 0)])
    end
  end
end

results = %i[notify durable asynchronous].to_h do |mode|
  reader, writer = IO.pipe
  other = fork do
    reader.close
    HopPlayer.new(url, mode, "hop_b", "hop_a").play(rounds + warmup, first: false)
    writer.close
    exit!(0)
  end
  writer.close
  sleep 0.3 # the other side listens first
  times = HopPlayer.new(url, mode, "hop_a", "hop_b").play(rounds + warmup, first: true)
                   .drop(warmup).map { |ms| ms / 2 }
  _, status = Process.wait2(other)
  raise "the other side failed (#{mode})" unless status.success?

  [mode, { hop_p50_ms: Bench.percentile(times, 50).round(3), hop_p90_ms: Bench.percentile(times, 90).round(3) }]
end
Bench.with_pg(Bench::PG_ADMIN_URL) { |conn| conn.exec("DROP DATABASE tasker_bench_floor WITH (FORCE)") }
FileUtils.mkdir_p(Bench::OUT)
File.write(File.join(Bench::OUT, "hop_floor.json"), JSON.pretty_generate(results))
puts JSON.pretty_generate(results)
