# frozen_string_literal: true

require "spec_helper"
require "pg"
require "timeout"

# Every blocking call into the Rust core can be interrupted by
# Thread#kill, Timeout (Thread#raise) or Ctrl-C (Interrupt): the unblocking
# function cancels the Rust future, so the call returns at once instead of
# when its own wait ends, and nothing is left behind (no claimed step, no
# lock, no waiting query).
RSpec.describe "interrupting blocking calls" do
  let(:migration_lock) { 0x7461_736b_6572 } # core/src/db/mod.rs

  def monotonic
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  # Runs the block in a thread, kills the thread once it is blocked, and
  # returns how long the kill took to end it.
  def seconds_to_kill(&block)
    thread = Thread.new(&block)
    sleep 0.05 until thread.status == "sleep" || !thread.alive?
    sleep 0.2 # inside the native call now
    expect(thread).to be_alive
    killed_at = monotonic
    thread.kill
    expect(thread.join(5)).to be(thread)
    monotonic - killed_at
  end

  def admin
    @admin ||= PG.connect(TEST_DATABASE_URL)
  end

  after { @admin&.close }

  def migration_lock_holders
    admin.exec(<<~SQL).getvalue(0, 0).to_i
      SELECT count(*) FROM pg_locks
       WHERE locktype = 'advisory' AND ((classid::bigint << 32) | objid::bigint) = #{migration_lock}
    SQL
  end

  it "Task#wait's native wait ends at Thread#kill and at Timeout, long before its own timeout" do
    task = TaskerCore.create_task(namespace: "held", name: "hold", version: "1.0.0", context: { order_id: 3 })

    expect(seconds_to_kill { TaskerCore.client.wait_for_task(task.task_uuid, 30.0) }).to be < 1.5
    started = monotonic
    expect { Timeout.timeout(0.3) { TaskerCore.client.wait_for_task(task.task_uuid, 30.0) } }
      .to raise_error(Timeout::Error)
    expect(monotonic - started).to be < 1.5
    expect(task.reload.status).to eq("in_progress")
  end

  it "a worker's next_job ends at Thread#kill and at Interrupt, leaving no job claimed and lost" do
    namespace = unique_name("intr")
    TaskerCore.client.register_template_yaml(<<~YAML, "interrupts.yaml")
      namespace: #{namespace}
      name: one
      version: 1.0.0
      steps:
        - { name: only, handler: { callable: Probe::Echo } }
    YAML
    worker = TaskerCore::Native::Worker.start(TaskerCore.client, [namespace], 1)
    begin
      expect(seconds_to_kill { worker.next_job(30.0) }).to be < 1.5
      main = Thread.current
      Thread.new do
        sleep 0.3
        main.raise(Interrupt)
      end
      expect { worker.next_job(30.0) }.to raise_error(Interrupt)

      # The worker still hands out the next step, exactly once. (With
      # RabbitMQ an orchestrator sends a new task's first message.)
      orchestrator = TaskerCore.start(orchestrator: true)
      task = TaskerCore.create_task(namespace: namespace, name: "one", version: "1.0.0", context: { "x" => 1 })
      job = worker.next_job(10.0)
      expect(job[:task_uuid]).to eq(task.task_uuid)
      worker.complete(job[:step_uuid], "done")
      expect(task.wait(timeout: 10).status).to eq("complete")
      expect(task.step("only").attempts).to eq(1)
    ensure
      worker.shutdown(5.0)
      orchestrator&.stop(timeout: 5)
    end
  end

  it "migrate! waiting for another migrator's lock ends at Timeout and leaves no lock or waiter behind" do
    admin.exec("SELECT pg_advisory_lock(#{migration_lock})")
    started = monotonic
    expect { Timeout.timeout(0.5) { TaskerCore.migrate! } }.to raise_error(Timeout::Error)
    expect(monotonic - started).to be < 2
    expect(seconds_to_kill { TaskerCore.migrate! }).to be < 1.5
    expect(migration_lock_holders).to eq(1) # the admin's own
    admin.exec("SELECT pg_advisory_unlock(#{migration_lock})")

    expect(migration_lock_holders).to eq(0)
    expect(TaskerCore.migrate!).to be(true)
    expect(migration_lock_holders).to eq(0)
  end

  it "a send blocked on a locked queue ends at Timeout; the queue works afterwards" do
    # A PGMQ client of its own (in the RabbitMQ run as well): a PostgreSQL
    # lock is what can hold a send up here.
    client = TaskerCore::Native::Client.connect({}, { "database_url" => TEST_DATABASE_URL,
                                                      "messaging" => { "provider" => "pgmq" } })
    service = TaskerCore::MessageService.new(client)
    queue = unique_name("intr_send")
    service.create_queue(queue)
    admin.exec("BEGIN")
    admin.exec("LOCK TABLE pgmq.q_#{queue} IN ACCESS EXCLUSIVE MODE")
    started = monotonic
    expect { Timeout.timeout(0.5) { service.send_message(queue, { "n" => 1 }) } }.to raise_error(Timeout::Error)
    expect(monotonic - started).to be < 2
    admin.exec("ROLLBACK")

    expect(service.send_message(queue, { "n" => 2 })).to be_a(Integer)
    received = service.receive(queue, max: 10, visibility_timeout: 30).map { |m| m[:payload] }
    # The interrupted insert never ran: a new queue's statement is prepared
    # first, and preparing it waited for the table's lock; the cancelled
    # call's connection was not reused for it.
    expect(received.map { |p| p["n"] }).to eq([2])
  ensure
    service&.delete_queue(queue)
  end
end
