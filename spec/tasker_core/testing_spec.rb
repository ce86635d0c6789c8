# frozen_string_literal: true

require "spec_helper"
require "tasker_core/testing"
require_relative "../fixtures/handlers/settings_handlers"
require_relative "../fixtures/handlers/decision_handlers"

# The test mode, in the spec suite of the gem itself. Each example runs in
# a transaction rolled back after it, opened as Rails' transactional
# fixtures open theirs (not joinable: the code under test makes savepoints),
# so the test mode is checked where it is meant to run. No worker or
# orchestrator runs here.
RSpec.describe TaskerCore::Testing do
  around do |example|
    connection = ActiveRecord::Base.connection
    connection.begin_transaction(joinable: false)
    described_class.inline { example.run }
  ensure
    connection.rollback_transaction
  end

  def steps_of(task)
    task.workflow_steps.map { |s| [s.name, s.status, s.results, s.attempts] }
  end

  let(:ran_once) { [["", "pending"], %w[pending enqueued], %w[enqueued in_progress], %w[in_progress complete]] }

  it "runs a workflow to its end inside create_task, on the caller's connection, with production's history" do
    task = TaskerCore.create_task(namespace: "examples", name: "diamond_workflow", version: "1.0.0", context: { n: 6 })

    expect(task).to be_complete
    expect(steps_of(task)).to eq([["start", "complete", 36, 1], ["left", "complete", 1296, 1],
                                  ["right", "complete", 1296, 1], ["finish", "complete", 2_821_109_907_456, 1]])
    expect(history(task.transitions)).to eq([["", "pending"], %w[pending in_progress], %w[in_progress complete]])
    task.workflow_steps.each { |step| expect(history(step.transitions)).to eq(ran_once) }
    expect(task.workflow_steps.first.transitions.last.metadata).to eq("worker" => "tasker_core-testing", "attempt" => 1)
    # Only this connection's transaction holds it: the engine's own pool
    # does not see it.
    expect { TaskerCore.client.task(task.task_uuid) }.to raise_error(TaskerCore::NotFoundError)
    # No message was sent for it.
    expect(TaskerCore.message_service.stats(TaskerCore.queue_name("examples"))[:visible]).to eq(0)
  end

  it "runs each workflow of create_tasks to its end before it returns, in the order given" do
    tasks = TaskerCore.create_tasks([3, 4].map do |n|
      { namespace: "examples", name: "diamond_workflow", version: "1.0.0", context: { n: n } }
    end)

    expect(tasks.map { |t| [t.status, t.workflow_steps.find_by(name: "start").results] })
      .to eq([["complete", 9], ["complete", 16]])
    expect(TaskerCore.message_service.stats(TaskerCore.queue_name("examples"))[:visible]).to eq(0)
  end

  it "applies a decision as a worker does: the branch not chosen is skipped, the join runs" do
    task = TaskerCore.create_task(namespace: "decide", name: "shipping", version: "1.0.0",
                                  context: { "choose" => ["ship_by_post"] })

    expect(task).to be_complete
    expect(task.workflow_steps.map { |s| [s.name, s.status, s.attempts] }).to eq(
      [["validate", "complete", 1], ["choose_carrier", "complete", 1], ["ship_by_courier", "skipped", 0],
       ["ship_by_post", "complete", 1], ["post_label", "complete", 1], ["notify", "complete", 1]]
    )
    expect(task.step("choose_carrier").results).to eq("run" => ["ship_by_post"])
    expect(task.step("notify").results.fetch("courier")).to be_nil
    expect(history(task.step("ship_by_courier").transitions)).to eq([["", "pending"], %w[pending skipped]])
  end

  it "retries a retryable failure at once, counting the attempt, and records the error as a worker does" do
    task = TaskerCore.create_task(namespace: "probe", name: "retries", version: "1.0.0", context: {})

    expect(task).to have_step("flaky").in_state("complete").with_attempts(2).with_result("succeeded_on_attempt" => 2)
    expect(task).to have_step("after_flaky").with_result("succeeded_on_attempt" => 2)
    flaky = task.step("flaky")
    expect(history(flaky.transitions))
      .to eq([["", "pending"], %w[pending enqueued], %w[enqueued in_progress], %w[in_progress waiting_for_retry],
              %w[waiting_for_retry in_progress], %w[in_progress complete]])
    expect(flaky.last_error.except("backtrace"))
      .to eq("class" => "TaskerCore::RetryableError", "message" => "warehouse busy", "attempt" => 1,
             "retryable" => true, "worker" => "tasker_core-testing")
    expect(flaky.last_error["backtrace"].first).to include("probe_handlers.rb")
  end

  it "ends a task in error on a permanent failure, running the independent branch and blocking the dependent" do
    task = TaskerCore.create_task(namespace: "probe", name: "failures", version: "1.0.0", context: { "k" => 1 })

    expect(task.status).to eq("error")
    expect(task).to have_step("fails_for_good").failed_with(TaskerCore::PermanentError, "card declined")
    expect(task).to have_step("after_failure").in_state("pending").with_attempts(0)
    expect(task).to have_step("independent")
      .with_result(include("step_name" => "independent", "context" => { "k" => 1 }))
    expect(history(task.transitions).last).to eq(%w[in_progress error])
  end

  it "hands handlers their handler.initialization settings" do
    task = run_workflow(namespace: "settings", name: "greetings")

    expect(task.version).to eq("1.0.0")
    expect(steps_of(task)).to eq([["configured", "complete", "hej hej a,b", 1],
                                  ["own_initialize", "complete", "hej hej a,b!", 1],
                                  ["unconfigured", "complete", { "config" => {}, "frozen" => true }, 1],
                                  ["plain_class", "complete", "HEJ HEJ A,B! (loud)", 1]])
  end

  it "creates nothing, and runs nothing, when the creating transaction rolls back" do
    runs = []
    subscriber = ActiveSupport::Notifications.subscribe("perform_step.tasker_core") { |*, payload| runs << payload }
    uuid = nil
    ActiveRecord::Base.transaction(requires_new: true) do
      uuid = TaskerCore.create_task(namespace: "examples", name: "linear_workflow", version: "1.0.0",
                                    context: { n: 2 }).task_uuid
      # Inside the transaction it waits for the commit.
      expect(TaskerCore::Models::Task.find(uuid).status).to eq("in_progress")
      raise ActiveRecord::Rollback
    end

    expect(runs).to be_empty
    expect(TaskerCore::Models::Task.where(task_uuid: uuid)).to be_empty
  ensure
    ActiveSupport::Notifications.unsubscribe(subscriber)
  end

  it "runs a task created inside a transaction when that transaction commits" do
    task = nil
    ActiveRecord::Base.transaction(requires_new: true) do
      task = TaskerCore.create_task(namespace: "examples", name: "linear_workflow", version: "1.0.0",
                                    context: { n: 2 })
      expect(task.status).to eq("in_progress")
    end

    expect(task.reload).to be_complete
    expect(task.workflow_steps.last.results).to eq(65_536)
  end

  describe "fake!" do
    around { |example| described_class.fake { example.run } }

    it "creates tasks without running them; run_step and run_all drive them" do
      task = TaskerCore.create_task(namespace: "examples", name: "linear_workflow", version: "1.0.0",
                                    context: { n: 3 })
      other = TaskerCore.create_task(namespace: "examples", name: "diamond_workflow", version: "1.0.0",
                                     context: { n: 2 })

      expect(task.workflow_steps.map(&:status)).to eq(%w[enqueued pending pending pending])
      expect(described_class.tasks).to eq([task, other])
      step = described_class.run_step(task, "square_one")
      expect([step.status, step.results]).to eq(["complete", 9])
      expect(task).to have_step("square_two").in_state("enqueued")
      expect { described_class.run_step(task, "square_three") }
        .to raise_error(TaskerCore::Testing::NotRunnableError,
                        "step \"square_three\" of task #{task.task_uuid} (examples/linear_workflow) is pending, " \
                        "not ready to run (waiting on square_two; task is in_progress)")
      expect { described_class.run_step(task, "square_one") }
        .to raise_error(TaskerCore::Testing::NotRunnableError, /is complete, not ready to run\z/)
      expect { task.wait(timeout: 1) }.to raise_error(TaskerCore::TimeoutError, /nothing runs it until/)

      expect(described_class.run_all.map(&:task_uuid)).to eq([task.task_uuid, other.task_uuid])
      expect(task.reload.workflow_steps.last.results).to eq(43_046_721)
      expect(other.reload.workflow_steps.last.results).to eq(65_536)
      expect(described_class.tasks).to be_empty
    end
  end

  describe "the have_step matcher's messages" do
    let(:task) { TaskerCore.create_task(namespace: "probe", name: "failures", version: "1.0.0", context: {}) }

    it "names what differs" do
      matcher = have_step("fails_for_good").with_result(1).failed_with(TaskerCore::RetryableError)
      expect(matcher.matches?(task)).to be(false)
      expect(matcher.failure_message)
        .to eq("expected step \"fails_for_good\" of task #{task.task_uuid} (error) to have result 1, got nil; to " \
               "have failed for good with TaskerCore::RetryableError, but it is error with " \
               "TaskerCore::PermanentError: \"card declined\"")
      missing = have_step("nope")
      expect(missing.matches?(task)).to be(false)
      expect(missing.failure_message)
        .to eq("expected task #{task.task_uuid} to have a step \"nope\"; its steps: fails_for_good, after_failure, " \
               "independent")
    end
  end
end
