# frozen_string_literal: true

require "spec_helper"
require_relative "../fixtures/handlers/priorities_handlers"

# Task priorities end to end, under whichever provider the run uses
# (bin/test runs this file once per provider): a worker of one thread, the
# handlers recording the order in which they ran (Priorities::Log).
RSpec.describe "task priorities" do
  before { Priorities::Log.reset! }

  let(:queue) { TaskerCore.queue_name("priorities") }
  # Labels of this example's own tasks (any task left by an earlier run is
  # told apart and left out of the order).
  let(:run) { SecureRandom.hex(3) }

  def ran
    Priorities::Log.labels.select { |l| l.start_with?("#{run}-") }.map { |l| l.delete_prefix("#{run}-") }
  end

  def create(name, label, priority: nil, nap: nil)
    TaskerCore.create_task(namespace: "priorities", name: name, version: "1.0.0",
                           context: { label: "#{run}-#{label}", nap: nap }.compact, **{ priority: priority }.compact)
  end

  # The enqueued steps of the namespace by priority, as TaskerCore.status
  # counts them.
  def enqueued_by_priority
    TaskerCore.status["namespaces"].find { |n| n["namespace"] == "priorities" }
              &.fetch("steps_enqueued_by_priority") || {}
  end

  def wait_until(what, timeout: 10)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    until yield
      if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
        raise "timed out after #{timeout} s waiting until #{what}"
      end

      sleep 0.02
    end
  end

  # Runs the block with other settings (a new client: the settings are read
  # when it connects), then restores them. The client left behind closes its
  # broker connection first: with RabbitMQ its consumers would otherwise go
  # on taking deliveries (up to the prefetch) that nobody reads. The
  # restored client registers the templates again, as spec_helper's did: a
  # worker checks the handlers of the templates its client registered. The
  # clients left behind are collected at once, and their connection pools
  # closed with them, so the rest of the run does not hold their
  # connections.
  def with_settings(priority_aging_ms:, file_settings:)
    config = TaskerCore.configuration
    saved = [config.priority_aging_ms, config.file_settings]
    TaskerCore.message_service.close
    TaskerCore.configure do |c|
      c.priority_aging_ms = priority_aging_ms
      c.file_settings = file_settings
    end
    yield
  ensure
    TaskerCore.message_service.close
    TaskerCore.configure { |c| c.priority_aging_ms, c.file_settings = saved }
    TaskerCore.register_templates!
    GC.start
  end

  it "takes the priority from create_task, else the template, and refuses one out of range" do
    tasks = [create("urgent", "a"), create("urgent", "b", priority: -1), create("ranked", "c")]
    expect(tasks.map(&:priority)).to eq([4, -1, 0])
    expect(tasks.map { |t| t.reload.priority }).to eq([4, -1, 0])
    expect { create("ranked", "d", priority: 6) }.to raise_error(
      TaskerCore::ValidationError, "priority must be a whole number from -5 to 5 (higher runs first), got 6"
    )
    expect { create("ranked", "e", priority: "high") }.to raise_error(TaskerCore::ValidationError, /got "high"$/)
  ensure
    # Nothing of them may run in the other examples.
    tasks&.each { |t| TaskerCore.cancel_task(t) }
  end

  # 60 tasks of priority -5, then 10 of the `urgent` template (priority 4),
  # all created before any worker runs. The worker's single thread then runs
  # the 10 urgent ones first, in creation order, and then the 60 others in
  # creation order: the exact order below. (Aging cannot reorder them: with
  # the default aging step of 10 s, a task of priority -5 is passed only by
  # tasks of priority 4 created less than 90 s after it.)
  it "runs the 10 high-priority tasks of a backlog before the 60 low-priority ones created before them" do
    publisher = TaskerCore.start(orchestrator: true) # RabbitMQ: publishes the new tasks' messages
    enqueued_before = enqueued_by_priority
    lows = highs = nil
    ActiveRecord::Base.transaction do
      lows = Array.new(60) { |i| create("ranked", "low-#{i}", priority: -5) }
      highs = Array.new(10) { |i| create("urgent", "high-#{i}") }
    end
    expect(lows.map(&:priority).uniq).to eq([-5])
    expect(highs.map(&:priority).uniq).to eq([4])
    # What rake tasker:status shows (counted across the database: any task
    # an earlier run left is counted before too).
    expect(enqueued_by_priority.to_h { |p, n| [p, n - enqueued_before.fetch(p, 0)] }).to eq("4" => 10, "-5" => 60)
    expect(TaskerCore::OperatorReports.status).to match(/^    enqueued by priority: \+4=\d+ (.* )?-5=\d+$/)
    # RabbitMQ: once an orchestrator has published them.
    wait_until("the queue holds the 70 messages") { TaskerCore.message_service.stats(queue)[:visible] >= 70 }

    worker = TaskerCore.start(orchestrator: false, worker: { namespaces: %w[priorities], concurrency: 1 })
    (highs + lows).each { |t| t.wait(timeout: 30) }
    expect((highs + lows).map(&:status).uniq).to eq(["complete"])
    expect(ran).to eq(Array.new(10) { |i| "high-#{i}" } + Array.new(60) { |i| "low-#{i}" })
  ensure
    worker&.stop(timeout: 10)
    publisher&.stop(timeout: 10)
  end

  # A stream of priority-5 tasks that never runs dry (a feeder keeps four
  # waiting), and one task of priority -5 created while it flows, with an
  # aging step of 300 ms: the low task waits behind newer high ones for at
  # most (5 - -5) * 300 ms = 3 s. PGMQ: a message is passed only by those
  # sent less than 3 s after it. RabbitMQ (strict priorities, and a
  # prefetch of 1, so the broker holds the waiting messages): the sweep
  # (every 100 ms here) sends it again at the top priority once it waited
  # 3 s, and it runs after the high ones already waiting.
  it "still runs a low-priority task under a stream of high-priority ones, within the aging bound" do
    bound = 3.0
    with_settings(priority_aging_ms: 300,
                  file_settings: { "messaging" => { "prefetch" => 1 },
                                   "orchestration" => { "sweep_interval_ms" => 100 } }) do
      runtime = TaskerCore.start(orchestrator: true, worker: { namespaces: %w[priorities], concurrency: 1 })
      highs = Queue.new
      stop = false
      feeder = Thread.new do
        created = 0
        until stop
          if created - Priorities::Log.count("#{run}-high") < 4
            highs << create("ranked", "high-#{created}", priority: 5, nap: 0.01)
            created += 1
          else
            sleep 0.002
          end
        end
      end
      wait_until("the stream of high-priority tasks runs") { Priorities::Log.count("#{run}-high") >= 5 }

      low = create("ranked", "low", priority: -5)
      low.wait(timeout: 15)
      stop = true
      feeder.join
      highs = Array.new(highs.size) { highs.pop }
      highs.each { |t| t.wait(timeout: 15) }
      runtime.stop(timeout: 10)

      expect(low.status).to eq("complete")
      expect(highs.map(&:status).uniq).to eq(["complete"])
      # It waited about the bound: priority held for that long (newer
      # high-priority tasks ran first), and aging ended it.
      step = low.step("run")
      waited = step.started_at - low.created_at
      expect(waited).to be_between(bound - 0.5, bound + 1.5)
      order = ran
      newer = highs.select { |t| t.created_at > low.created_at }.map { |t| t.context["label"].delete_prefix("#{run}-") }
      expect((order.take(order.index("low")) & newer).size).to be >= 10

      raised = step.transitions.select { |t| t.metadata.key?("priority_raised") }
      if SPEC_PROVIDER == :rabbitmq
        expect(raised.map { |t| [t.from_state, t.to_state, t.metadata["priority_raised"]] })
          .to eq([["enqueued", "enqueued", { "from" => -5, "to" => 5 }]])
      else
        expect(raised).to eq([]) # PGMQ's read order ages by itself
      end
    end
  end
end
