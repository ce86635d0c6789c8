# frozen_string_literal: true

require "spec_helper"
require_relative "../fixtures/handlers/decision_handlers"

# Decision points (decision: true): decide/shipping is
#   validate -> choose_carrier (decision) -> ship_by_courier -----------> notify
#                                         -> ship_by_post -> post_label    ^
#                                                         \----------------/
# and choose_carrier runs the dependents its context's "choose" names.
RSpec.describe "decision points" do
  run_tasker_around_each(namespaces: %w[decide])

  def ship(context)
    TaskerCore.create_task(namespace: "decide", name: "shipping", version: "1.0.0", context: context)
  end

  def states(task)
    task.workflow_steps.reload.to_h { |s| [s.name, s.status] }
  end

  def ran(name, saw)
    { "ran" => name, "saw" => saw }
  end

  def skip_history(step, reason)
    expect(history(step.transitions)).to eq([["", "pending"], %w[pending skipped]])
    expect(step.transitions.last.metadata).to eq(
      "decision_step" => "choose_carrier", "decision_step_uuid" => step.task.step("choose_carrier").step_uuid,
      "reason" => reason
    )
    expect([step.attempts, step.results, step.last_error, step.started_at]).to eq([0, nil, nil, nil])
  end

  it "runs the branch the decision chose: the other branch and everything below it are skipped, the join runs" do
    task = ship("choose" => ["ship_by_courier"])
    task.wait(timeout: 20)
    expect(task.status).to eq("complete")
    expect(states(task)).to eq(
      "validate" => "complete", "choose_carrier" => "complete", "ship_by_courier" => "complete",
      "ship_by_post" => "skipped", "post_label" => "skipped", "notify" => "complete"
    )
    decision = task.step("choose_carrier")
    expect(decision.results).to eq("run" => ["ship_by_courier"])
    expect(decision.decision?).to be(true)
    expect(task.step("validate").decision?).to be(false)
    courier = ran("ship_by_courier", { "choose_carrier" => { "run" => ["ship_by_courier"] } })
    expect(task.step("ship_by_courier").results).to eq(courier)
    expect(task.step("notify").results).to eq("courier" => courier, "post" => nil)
    skip_history(task.step("ship_by_post"), "not_chosen")
    skip_history(task.step("post_label"), "dependencies_skipped")
    expect(history(task.step("notify").transitions).last).to eq(%w[in_progress complete])
    expect(history(task.transitions)).to eq([["", "pending"], %w[pending in_progress], %w[in_progress complete]])
  end

  it "runs the other branch, and the chain below it, when the decision chooses it" do
    task = ship("choose" => ["ship_by_post"])
    task.wait(timeout: 20)
    expect(task.status).to eq("complete")
    expect(states(task)).to eq(
      "validate" => "complete", "choose_carrier" => "complete", "ship_by_courier" => "skipped",
      "ship_by_post" => "complete", "post_label" => "complete", "notify" => "complete"
    )
    post = ran("ship_by_post", { "choose_carrier" => { "run" => ["ship_by_post"] } })
    expect(task.step("post_label").results).to eq(ran("post_label", { "ship_by_post" => post }))
    expect(task.step("notify").results).to eq("courier" => nil, "post" => post)
    skip_history(task.step("ship_by_courier"), "not_chosen")
  end

  it "runs both branches when the decision chooses both" do
    task = ship("choose" => %w[ship_by_post ship_by_courier])
    task.wait(timeout: 20)
    expect(task.status).to eq("complete")
    expect(states(task).values.uniq).to eq(["complete"])
    expect(task.step("choose_carrier").results).to eq("run" => %w[ship_by_post ship_by_courier])
    expect(task.step("notify").results.transform_values { |r| r["ran"] })
      .to eq("courier" => "ship_by_courier", "post" => "ship_by_post")
  end

  it "skips every dependent and everything below them when the decision chooses nothing; the task completes" do
    task = ship("choose" => [])
    task.wait(timeout: 20)
    expect(task.status).to eq("complete")
    expect(states(task)).to eq(
      "validate" => "complete", "choose_carrier" => "complete", "ship_by_courier" => "skipped",
      "ship_by_post" => "skipped", "post_label" => "skipped", "notify" => "skipped"
    )
    expect(task.step("choose_carrier").results).to eq("run" => [])
    skip_history(task.step("ship_by_courier"), "not_chosen")
    skip_history(task.step("ship_by_post"), "not_chosen")
    skip_history(task.step("post_label"), "dependencies_skipped")
    skip_history(task.step("notify"), "dependencies_skipped")
  end

  it "fails the decision step for good when it names a step that is not its dependent: nothing else runs" do
    task = ship("choose" => %w[ship_by_courier ship_by_drone post_label])
    task.wait(timeout: 20)
    expect(task.status).to eq("error")
    expect(task.transitions.last.metadata).to eq("failed_steps" => ["choose_carrier"])
    expect(states(task)).to eq(
      "validate" => "complete", "choose_carrier" => "error", "ship_by_courier" => "pending",
      "ship_by_post" => "pending", "post_label" => "pending", "notify" => "pending"
    )
    decision = task.step("choose_carrier")
    message = "decision step choose_carrier of template decide/shipping@1.0.0 chose post_label, ship_by_drone, " \
              "not among its dependents (ship_by_courier, ship_by_post)"
    expect([decision.attempts, decision.results]).to eq([1, nil])
    expect(decision.last_error).to include("class" => "TaskerCore::DecisionError", "message" => message,
                                           "retryable" => false)
    expect(history(decision.transitions).last).to eq(%w[in_progress error])
    expect(decision.transitions.last.metadata).to include("error_class" => "TaskerCore::DecisionError",
                                                          "error_message" => message)
    expect(task.workflow_steps.reload.sum(&:attempts)).to eq(2)
  end

  it "fails the decision step for good when its handler returns something that is not a Decision" do
    task = ship("returns" => { "run" => ["ship_by_courier"] })
    task.wait(timeout: 20)
    expect(task.status).to eq("error")
    decision = task.step("choose_carrier")
    expect([decision.status, decision.attempts, decision.results]).to eq(["error", 1, nil])
    expect(decision.last_error).to include(
      "class" => "TaskerCore::DecisionError",
      "message" => "decision step choose_carrier of template decide/shipping@1.0.0 returned " \
                   "{\"run\"=>[\"ship_by_courier\"]}, not a TaskerCore::Decision " \
                   "(return TaskerCore::Decision.new(run: [names of its dependents to run]))"
    )
    expect(%w[ship_by_courier ship_by_post post_label notify].map { |s| task.step(s).status }.uniq).to eq(["pending"])
  end

  it "fails a step that returns a Decision without being a decision point" do
    task = ship("validate_decides" => true, "choose" => ["ship_by_courier"])
    task.wait(timeout: 20)
    expect(task.status).to eq("error")
    validate = task.step("validate")
    expect([validate.status, validate.attempts]).to eq(["error", 1])
    expect(validate.last_error).to include(
      "class" => "TaskerCore::DecisionError",
      "message" => "step validate of template decide/shipping@1.0.0 returned a TaskerCore::Decision but is not " \
                   "a decision (declare decision: true on it in the template)"
    )
    expect(task.workflow_steps.drop(1).map(&:status).uniq).to eq(["pending"])
  end

  it "refuses operator actions on skipped steps, and cancelling a task leaves its skipped steps skipped" do
    task = ship("choose" => ["ship_by_courier"], "nap" => { "ship_by_courier" => 1.5 })
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 20
    until (post = task.workflow_steps.reload.find { |s| s.name == "ship_by_post" }).status == "skipped"
      raise "ship_by_post was not skipped in time" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep 0.05
    end
    expect(TaskerCore.retry_step(post)).to be(false)
    expect(TaskerCore.resolve_step_manually(post, { "by" => "hand" })).to be(false)
    expect(TaskerCore.cancel_task(task, reason: "customer called")).to be(true)
    task.reload
    expect(task.status).to eq("cancelled")
    expect(states(task).slice("ship_by_post", "post_label", "notify")).to eq(
      "ship_by_post" => "skipped", "post_label" => "skipped", "notify" => "cancelled"
    )
    skip_history(task.step("ship_by_post"), "not_chosen")
    skip_history(task.step("post_label"), "dependencies_skipped")
  end

  it "applies a decision given by hand to a failed decision step, and refuses one that is not a decision" do
    task = ship("choose" => ["ship_by_drone"])
    task.wait(timeout: 20)
    expect(task.status).to eq("error")
    decision = task.step("choose_carrier")
    expect { TaskerCore.resolve_step_manually(decision, { "carrier" => "post" }) }.to raise_error(
      TaskerCore::ValidationError,
      a_string_including("cannot resolve it by hand with that result: decision step choose_carrier of template " \
                         'decide/shipping@1.0.0 returned {"carrier": "post"}, which is not a decision')
    )
    expect(TaskerCore.resolve_step_manually(decision, { "run" => ["ship_by_post"] })).to be(true)
    task.wait(timeout: 20)
    expect(task.status).to eq("complete")
    expect(states(task)).to eq(
      "validate" => "complete", "choose_carrier" => "resolved_manually", "ship_by_courier" => "skipped",
      "ship_by_post" => "complete", "post_label" => "complete", "notify" => "complete"
    )
    skip_history(task.step("ship_by_courier"), "not_chosen")
  end
end
