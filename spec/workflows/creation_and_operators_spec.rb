# frozen_string_literal: true

require "spec_helper"

# Namespace "held" has no worker in the specs: its messages stay in the
# queue, so what creation sent can be counted.
RSpec.describe "creating tasks and operating on them" do
  # An orchestrator only: with RabbitMQ it sends a new task's first
  # messages once the creating transaction commits.
  #
  # Held tasks that earlier examples left running are cancelled first:
  # under RabbitMQ the orchestrator's sweep re-sends, once, a step that has
  # waited (5 - priority) x messaging.priority_aging_ms in its queue (50 s
  # by default), and that message would be counted with this example's.
  around do |example|
    TaskerCore::Models::Task.where(namespace: "held", status: "in_progress")
                            .find_each { |task| TaskerCore.cancel_task(task, reason: "left by an earlier example") }
    runtime = TaskerCore.start(orchestrator: true)
    example.run
  ensure
    runtime&.stop(timeout: 10)
  end

  let(:queue) { TaskerCore.queue_name("held") }

  def eventually(timeout: 5)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    sleep 0.02 until yield || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
  end

  # Messages in the queue (total_sent counts a sequence, which a rollback
  # does not undo).
  def sent
    TaskerCore.message_service.stats(queue)[:depth]
  end

  it "creates nothing, and sends nothing, when the caller's transaction rolls back" do
    before = [TaskerCore::Models::Task.count, sent]
    ActiveRecord::Base.transaction do
      task = TaskerCore.create_task(namespace: "held", name: "hold", version: "1.0.0", context: { order_id: 1 })
      expect(TaskerCore::Models::Task.exists?(task.task_uuid)).to be(true) # visible inside
      raise ActiveRecord::Rollback
    end
    sleep 0.3 # time enough for a message that should not exist to show up
    expect([TaskerCore::Models::Task.count, sent]).to eq(before)
  end

  it "creates the task and its first message together when the caller's transaction commits" do
    before = sent
    task = ActiveRecord::Base.transaction do
      TaskerCore.create_task(namespace: "held", name: "hold", version: "1.0.0", context: { order_id: 2 })
    end
    expect(task.reload.status).to eq("in_progress")
    expect(task.workflow_steps.map { |s| [s.name, s.status] }).to eq([%w[first enqueued]])
    eventually { sent == before + 1 }
    expect(sent).to eq(before + 1)
  end

  it "stores the caller's W3C traceparent with the task, and refuses one that is not" do
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    task = TaskerCore.create_task(namespace: "held", name: "hold", version: "1.0.0", context: { order_id: 3 },
                                  traceparent: traceparent)
    expect(task.reload.traceparent).to eq(traceparent)
    expect(TaskerCore.create_task(namespace: "held", name: "hold", version: "1.0.0", context: { order_id: 4 })
      .reload.traceparent).to be_nil
    expect do
      TaskerCore.create_task(namespace: "held", name: "hold", version: "1.0.0", context: { order_id: 5 },
                             traceparent: "00-0000-01")
    end.to raise_error(TaskerCore::ValidationError, /traceparent "00-0000-01" is not a W3C traceparent/)
  end

  it "refuses a context that does not match the template's input_schema, naming the field" do
    expect do
      TaskerCore.create_task(namespace: "held", name: "hold", version: "1.0.0", context: { order_id: "x" })
    end.to raise_error(TaskerCore::ValidationError,
                       %r{held/hold@1.0.0 task does not match its input_schema: /order_id: "x" is not of type})
  end

  it "derives an identity key from the request when asked" do
    args = { namespace: "held", name: "hold", version: "1.0.0", context: { order_id: 3 }, identity_key: :derived }
    first = TaskerCore.create_task(**args)
    expect(TaskerCore.create_task(**args).task_uuid).to eq(first.task_uuid)
    expect(first.identity_key).to start_with("sha256:")
  end

  it "creates many tasks in one statement, in the order given, each with its first message" do
    key = "bulk-#{SecureRandom.uuid}"
    before = [TaskerCore::Models::Task.count, sent]
    tasks = TaskerCore.create_tasks(
      [{ namespace: "held", name: "hold", version: "1.0.0", context: { order_id: 10 }, priority: 2 },
       { "namespace" => "held", "name" => "hold", "version" => "1.0.0", "context" => { "order_id" => 11 },
         "identity_key" => key },
       { namespace: "held", name: "hold", version: "1.0.0", context: { order_id: 12 }, identity_key: key },
       { namespace: "held", name: "hold", version: "1.0.0", context: { order_id: 13 }, delay: 3600 }]
    )

    expect(tasks.map { |t| t.reload.context }).to eq([{ "order_id" => 10 }, { "order_id" => 11 }, { "order_id" => 11 },
                                                      { "order_id" => 13 }])
    expect(tasks[2].task_uuid).to eq(tasks[1].task_uuid) # a repeated identity key returns the first task
    expect(tasks.map { |t| [t.status, t.priority] }).to eq([["in_progress", 2], ["in_progress", 0],
                                                            ["in_progress", 0], ["pending", 0]])
    expect(tasks.map { |t| t.workflow_steps.map { |s| [s.name, s.status] } })
      .to eq([[%w[first enqueued]], [%w[first enqueued]], [%w[first enqueued]], [%w[first pending]]])
    eventually { sent == before[1] + 2 }
    expect([TaskerCore::Models::Task.count, sent]).to eq([before[0] + 3, before[1] + 2])
  end

  it "creates none of the tasks when one request of create_tasks is wrong, naming it by its index" do
    good = { namespace: "held", name: "hold", version: "1.0.0", context: { order_id: 20 } }
    before = TaskerCore::Models::Task.count
    expect { TaskerCore.create_tasks([good, good.merge(context: { order_id: "x" })]) }
      .to raise_error(TaskerCore::ValidationError, %r{\Acreate_tasks request 1: the context of a held/hold@1.0.0 task})
    expect { TaskerCore.create_tasks([good, good.merge(name: "nope")]) }
      .to raise_error(TaskerCore::NotFoundError, %r{\Acreate_tasks request 1: no task template held/nope@1.0.0})
    expect { TaskerCore.create_tasks([good, "held/hold"]) }
      .to raise_error(ArgumentError, "create_tasks request 1: expected a Hash of create_task's keywords, got String")
    expect { TaskerCore.create_tasks([good.except(:version)]) }
      .to raise_error(ArgumentError, "create_tasks request 0: missing keyword: version")
    expect { TaskerCore.create_tasks([good.merge(colour: "red")]) }
      .to raise_error(ArgumentError, "create_tasks request 0: unknown keyword: colour")
    expect { TaskerCore.create_tasks(good) }.to raise_error(ArgumentError, /takes an Array of Hashes/)
    expect(TaskerCore.create_tasks([])).to eq([])
    expect(TaskerCore::Models::Task.count).to eq(before)
  end

  it "creates none of the tasks of create_tasks when the caller's transaction rolls back" do
    requests = [30, 31, 32].map do |id|
      { namespace: "held", name: "hold", version: "1.0.0", context: { order_id: id } }
    end
    before = [TaskerCore::Models::Task.count, sent]
    ActiveRecord::Base.transaction do
      TaskerCore.create_tasks(requests)
      raise ActiveRecord::Rollback
    end
    sleep 0.3 # time enough for a message that should not exist to show up
    expect([TaskerCore::Models::Task.count, sent]).to eq(before)
  end

  it "cancels a task: every unfinished step is cancelled, with the reason in the history" do
    task = TaskerCore.create_task(namespace: "held", name: "hold", version: "1.0.0", context: { order_id: 4 })

    expect(TaskerCore.cancel_task(task, reason: "customer withdrew")).to be(true)
    expect(TaskerCore.cancel_task(task)).to be(false)
    task.reload
    expect(task.status).to eq("cancelled")
    expect(task.workflow_steps.map(&:status)).to eq(["cancelled"])
    expect(task.transitions.last.metadata).to eq("reason" => "customer withdrew")
  end
end
