# frozen_string_literal: true

require "spec_helper"

# Delayed tasks (run_at:, delay:) and task deadlines (timeout_seconds),
# with an orchestrator (whose scheduler starts and ends them) and a worker
# in this process. Handlers (Probe::Nap) return when they started.
RSpec.describe "delayed tasks and deadlines" do
  run_tasker_around_each(namespaces: %w[timing])

  def started_at(task, step)
    Time.iso8601(task.step(step).results.fetch("started_at"))
  end

  def eventually(timeout: 10)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    sleep 0.05 until yield || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
  end

  it "creates a task with delay: pending at once, runs nothing before run_at, and runs it soon after" do
    task = TaskerCore.create_task(namespace: "timing", name: "later", version: "1.0.0", delay: 1.5)
    expect(task.status).to eq("pending")
    expect(task.run_at - task.created_at).to be_within(0.1).of(1.5)
    expect(task.workflow_steps.map(&:status)).to eq(%w[pending pending])

    sleep 1.0
    task.reload
    expect([task.status, task.workflow_steps.map(&:status)]).to eq(["pending", %w[pending pending]])

    task.wait(timeout: 15)
    expect(task.status).to eq("complete")
    expect(started_at(task, "first")).to be >= task.run_at
    expect(started_at(task, "first") - task.run_at).to be < 1.0
    expect(history(task.transitions)).to eq([["", "pending"], %w[pending in_progress], %w[in_progress complete]])
    started = task.transitions.second
    expect(started.metadata.keys).to eq(%w[reason run_at])
    expect(started.metadata["reason"]).to eq("run_at")
    expect(Time.iso8601(started.metadata["run_at"])).to eq(task.run_at)
    expect(history(task.step("first").transitions)).to eq(
      [["", "pending"], %w[pending enqueued], %w[enqueued in_progress], %w[in_progress complete]]
    )
  end

  it "takes run_at as a Time and delay as an ActiveSupport::Duration" do
    at = Time.now + 1
    by_time = TaskerCore.create_task(namespace: "timing", name: "later", version: "1.0.0", run_at: at)
    by_duration = TaskerCore.create_task(namespace: "timing", name: "later", version: "1.0.0",
                                         delay: ActiveSupport::Duration.build(1))
    expect(by_time.run_at).to be_within(0.000001).of(at)
    expect([by_time.status, by_duration.status]).to eq(%w[pending pending])
    [by_time, by_duration].each do |task|
      task.wait(timeout: 15)
      expect(task.status).to eq("complete")
      expect(started_at(task, "first")).to be >= task.run_at
      expect(started_at(task, "first") - task.run_at).to be < 1.0
    end
  end

  it "runs a task whose run_at has passed at once, as an ordinary task" do
    task = TaskerCore.create_task(namespace: "timing", name: "later", version: "1.0.0", run_at: Time.now - 60)
    expect(task.status).to eq("in_progress")
    task.wait(timeout: 15)
    expect(history(task.transitions)).to eq([["", "pending"], %w[pending in_progress], %w[in_progress complete]])
    expect(task.transitions.second.metadata).to eq({})
  end

  it "cancels a delayed task before its time: it never starts" do
    task = TaskerCore.create_task(namespace: "timing", name: "later", version: "1.0.0", delay: 1)
    expect(TaskerCore.cancel_task(task, reason: "changed my mind")).to be(true)
    sleep 1.6 # past run_at, and past several scheduler passes
    task.reload
    expect(task.status).to eq("cancelled")
    expect(history(task.transitions)).to eq([["", "pending"], %w[pending cancelled]])
    expect(task.transitions.last.metadata).to eq("reason" => "changed my mind")
    expect(task.workflow_steps.map { |s| [s.status, s.attempts] }).to eq([["cancelled", 0], ["cancelled", 0]])
  end

  it "refuses bad run_at, delay and timeout_seconds, naming the problem" do
    create = ->(**opts) { TaskerCore.create_task(namespace: "timing", name: "later", version: "1.0.0", **opts) }
    expect { create.call(delay: -1) }.to raise_error(
      TaskerCore::ValidationError,
      "delay must be a number of seconds (or an ActiveSupport::Duration), at least 0, got -1"
    )
    expect { create.call(delay: "soon") }.to raise_error(TaskerCore::ValidationError, /delay must be .* got "soon"/)
    expect { create.call(run_at: "tomorrow") }.to raise_error(
      TaskerCore::ValidationError, 'run_at must be a Time, got "tomorrow"'
    )
    expect { create.call(run_at: Time.now, delay: 1) }.to raise_error(
      TaskerCore::ValidationError, "give run_at or delay, not both"
    )
    expect { create.call(timeout_seconds: 0) }.to raise_error(
      TaskerCore::ValidationError, "timeout_seconds must be a whole number of seconds, at least 1, got 0"
    )
  end

  it "ends a task running past its deadline in error, reason deadline, keeping the late result as history" do
    task = TaskerCore.create_task(namespace: "timing", name: "deadline", version: "1.0.0", context: { nap: 2.5 })
    expect([task.status, task.timeout_seconds]).to eq(["in_progress", 1])
    task.wait(timeout: 15)
    expect(task.status).to eq("error")
    expect(history(task.transitions)).to eq([["", "pending"], %w[pending in_progress], %w[in_progress error]])
    ended = task.transitions.last
    expect(ended.metadata.keys).to eq(%w[reason deadline_at timeout_seconds])
    expect(ended.metadata.slice("reason", "timeout_seconds")).to eq("reason" => "deadline", "timeout_seconds" => 1)
    expect(Time.iso8601(ended.metadata["deadline_at"])).to eq(task.deadline_at)
    expect(task.deadline_at - task.transitions.second.created_at).to be_within(0.01).of(1.0)
    expect(task.completed_at - task.deadline_at).to be_between(0, 1.0)

    nap = task.step("nap")
    # The handler is still asleep: its outcome arrives after the deadline.
    eventually { nap.transitions.reload.size == 5 }
    expect(history(nap.transitions)).to eq([["", "pending"], %w[pending enqueued], %w[enqueued in_progress],
                                            %w[in_progress cancelled], %w[cancelled cancelled]])
    expect(nap.transitions[3].metadata.slice("reason", "timeout_seconds")).to eq("reason" => "deadline",
                                                                                 "timeout_seconds" => 1)
    late = nap.transitions[4].metadata
    expect(late.fetch("late_result").keys).to eq(["started_at"])
    expect(late.fetch("attempt")).to eq(1)
    expect(nap.reload.results).to be_nil
    after = task.step("after")
    expect([after.status, after.attempts, history(after.transitions)]).to eq(
      ["cancelled", 0, [["", "pending"], %w[pending cancelled]]]
    )
    expect(task.reload.status).to eq("error")
  end

  it "takes timeout_seconds from create_task over the template's, and counts it from a delayed task's start" do
    roomy = TaskerCore.create_task(namespace: "timing", name: "deadline", version: "1.0.0", context: { nap: 1.5 },
                                   timeout_seconds: 30)
    delayed = TaskerCore.create_task(namespace: "timing", name: "deadline", version: "1.0.0", context: { nap: 0.2 },
                                     delay: 1.5)
    expect(delayed.deadline_at).to be_nil
    [roomy, delayed].each { |task| task.wait(timeout: 15) }
    expect([roomy.status, roomy.timeout_seconds, delayed.status]).to eq(["complete", 30, "complete"])
    expect(delayed.deadline_at - delayed.run_at).to be_between(1.0, 2.0)
  end
end
