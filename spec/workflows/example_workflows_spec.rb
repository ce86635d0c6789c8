# frozen_string_literal: true

require "spec_helper"

# End to end through the public API, exactly as a user would: templates
# from examples/, Ruby handlers, an embedded orchestrator and worker.
RSpec.describe "example workflows through Ruby handlers" do
  before(:all) do
    @runtime = TaskerCore.start(orchestrator: true,
                                worker: { namespaces: %w[examples probe], concurrency: 4 })
  end

  after(:all) { @runtime.stop(timeout: 10) }

  def run(name, namespace: "examples", context: { n: 6 })
    task = TaskerCore.create_task(namespace: namespace, name: name, version: "1.0.0", context: context)
    task.wait(timeout: 30)
  end

  def step_rows(task)
    task.workflow_steps.map { |s| [s.name, s.status, s.results, s.attempts] }
  end

  it "runs the linear workflow: each step squares the last, ending at 6^16" do
    task = run("linear_workflow")

    expect(task.status).to eq("complete")
    expect(step_rows(task)).to eq([
                                    ["square_one", "complete", 36, 1],
                                    ["square_two", "complete", 1296, 1],
                                    ["square_three", "complete", 1_679_616, 1],
                                    ["square_four", "complete", 2_821_109_907_456, 1]
                                  ])
    expect(history(task.transitions)).to eq([["", "pending"], %w[pending in_progress], %w[in_progress complete]])
    # The first step is enqueued with the task; each later one is claimed
    # eagerly by the worker that finished the one before: no queue hop.
    first, *rest = task.workflow_steps.to_a
    expect(history(first.transitions)).to eq([["", "pending"], %w[pending enqueued], %w[enqueued in_progress],
                                              %w[in_progress complete]])
    rest.each do |step|
      expect(history(step.transitions)).to eq([["", "pending"], %w[pending in_progress], %w[in_progress complete]])
      expect(step.transitions.second.metadata).to include("eager" => true, "attempt" => 1)
    end
    expect(task.workflow_steps.map { |s| s.transitions.map(&:sort_key) }).to eq([[1, 2, 3, 4]] + [[1, 2, 3]] * 3)
  end

  it "runs the diamond workflow: both branches join into 6^16" do
    task = run("diamond_workflow")

    expect(task.status).to eq("complete")
    expect(step_rows(task)).to eq([
                                    ["start", "complete", 36, 1],
                                    ["left", "complete", 1296, 1],
                                    ["right", "complete", 1296, 1],
                                    ["finish", "complete", 2_821_109_907_456, 1]
                                  ])
    expect(task.step("finish").dependencies.map(&:name)).to eq(%w[left right])
  end

  it "runs the tree workflow: two branches, four leaves, one convergence" do
    task = run("tree_workflow", context: { n: 1 })

    expect(task.status).to eq("complete")
    expect(step_rows(task).map { |name, _, result, attempts| [name, result, attempts] }).to eq(
      [["root", 2, 1], ["branch_left", 3, 1], ["branch_right", 3, 1], ["leaf_d", 4, 1], ["leaf_e", 4, 1],
       ["leaf_f", 4, 1], ["leaf_g", 4, 1], ["final_convergence", 17, 1]]
    )
    expect(task.step("final_convergence").dependencies.map(&:name)).to match_array(%w[leaf_d leaf_e leaf_f leaf_g])
  end

  it "runs the mixed DAG: a join, two single-branch steps and a final step needing all three" do
    task = run("mixed_workflow", context: { n: 1 })

    expect(task.status).to eq("complete")
    expect(step_rows(task).map { |name, _, result, attempts| [name, result, attempts] }).to eq(
      [["init", 2, 1], ["process_left", 3, 1], ["process_right", 3, 1], ["validate", 7, 1], ["transform", 4, 1],
       ["analyze", 4, 1], ["finalize", 16, 1]]
    )
    expect(task.workflow_steps.map(&:status).uniq).to eq(["complete"])
  end

  it "hands handlers real ActiveRecord models, on a worker thread" do
    task = run("inspect_models", namespace: "probe", context: { order_id: 42 })

    result = task.step("inspect").results
    expect(result).to include("task_is_active_record" => true,
                              "task_class" => "TaskerCore::Models::Task",
                              "step_class" => "TaskerCore::Models::WorkflowStep",
                              "step_name" => "inspect",
                              "step_status" => "in_progress",
                              "context" => { "order_id" => 42 },
                              "sequence_class" => "TaskerCore::StepSequence")
    expect(result["thread"]).to match(/\Atasker-worker-\d\z/)
    expect(task).to be_a(ActiveRecord::Base)
    expect(task).to be_readonly
  end

  it "ends in error when a step fails for good, after running the independent branch" do
    task = run("failures", namespace: "probe")

    expect(task.status).to eq("error")
    expect(task.workflow_steps.map { |s| [s.name, s.status, s.attempts] }).to eq([
                                                                                   ["fails_for_good", "error", 1],
                                                                                   ["after_failure", "pending", 0],
                                                                                   ["independent", "complete", 1]
                                                                                 ])
    error = task.step("fails_for_good").last_error
    expect(error).to include("class" => "TaskerCore::PermanentError", "message" => "card declined",
                             "attempt" => 1, "retryable" => false)
    expect(error["backtrace"].first).to include("probe_handlers.rb")
    expect(task.transitions.last.metadata).to eq("failed_steps" => ["fails_for_good"])
  end

  it "resumes an errored task when an operator resolves the failed step by hand" do
    task = run("failures", namespace: "probe")
    failed = task.step("fails_for_good")

    expect(TaskerCore.resolve_step_manually(failed, { "charged_by_phone" => true })).to be(true)
    task.wait(timeout: 30)
    expect(task.status).to eq("complete")
    expect(task.workflow_steps.map { |s| [s.name, s.status] })
      .to eq([%w[fails_for_good resolved_manually], %w[after_failure complete], %w[independent complete]])
    expect(history(task.transitions).last(2)).to eq([%w[error in_progress], %w[in_progress complete]])
  end

  it "runs a failed step again when an operator retries it" do
    task = run("failures", namespace: "probe")

    expect(TaskerCore.retry_step(task.step("fails_for_good"))).to be(true)
    task.wait(timeout: 30)
    failed = task.step("fails_for_good")
    expect([task.status, failed.status, failed.attempts]).to eq(%w[error error] + [1])
    expect(history(failed.transitions)).to eq([["", "pending"], %w[pending enqueued], %w[enqueued in_progress],
                                               %w[in_progress error], %w[error pending], %w[pending enqueued],
                                               %w[enqueued in_progress], %w[in_progress error]])
  end

  it "retries a retryable failure and unblocks the step after it" do
    task = run("retries", namespace: "probe")

    expect(task.status).to eq("complete")
    flaky = task.step("flaky")
    expect([flaky.status, flaky.attempts, flaky.results]).to eq(["complete", 2, { "succeeded_on_attempt" => 2 }])
    expect(flaky.last_error).to include("class" => "TaskerCore::RetryableError", "message" => "warehouse busy")
    expect(history(flaky.transitions)).to eq([["", "pending"], %w[pending enqueued], %w[enqueued in_progress],
                                              %w[in_progress waiting_for_retry], %w[waiting_for_retry in_progress],
                                              %w[in_progress complete]])
    expect(task.step("after_flaky").results).to eq("succeeded_on_attempt" => 2)
  end

  it "creates a task once per identity key" do
    key = unique_name("order")
    first = TaskerCore.create_task(namespace: "examples", name: "linear_workflow", version: "1.0.0",
                                   context: { n: 2 }, identity_key: key)
    second = TaskerCore.create_task(namespace: "examples", name: "linear_workflow", version: "1.0.0",
                                    context: { n: 2 }, identity_key: key)

    expect(second.task_uuid).to eq(first.task_uuid)
    expect(first.wait(timeout: 30).workflow_steps.last.results).to eq(2**16)
  end
end

RSpec.describe "step timeouts" do
  run_tasker_around_each(namespaces: %w[probe], concurrency: 2)

  it "fails an attempt that runs past timeout_seconds and retries it" do
    task = TaskerCore.create_task(namespace: "probe", name: "timeouts", version: "1.0.0").wait(timeout: 30)

    step = task.step("slow_first_time")
    expect([task.status, step.status, step.attempts, step.results])
      .to eq(["complete", "complete", 2, { "finished_on_attempt" => 2 }])
    expect(step.last_error).to include("class" => "TaskerCore::StepTimeoutError",
                                       "message" => "step exceeded its timeout of 1 s")
  end
end
