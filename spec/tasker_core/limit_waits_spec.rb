# frozen_string_literal: true

require "spec_helper"
require_relative "../support/limit_waits"
require_relative "../support/prometheus_text"

# What waits for a limit, in TaskerCore.status, rake tasker:status's report
# and the metrics: steps waiting for a rate limit's token, steps and tasks
# waiting for a concurrency slot. A namespace of this example's own, a
# worker and an orchestrator in this process; exact counts.
RSpec.describe "Operations: what waits for a limit" do
  include_context "limit waits"

  def eventually(what, timeout: 20)
    deadline = Time.now + timeout
    sleep 0.05 until yield || Time.now > deadline
    expect(yield).to be(true), "timed out waiting for #{what}"
  end

  def namespace_status
    TaskerCore.status["namespaces"].find { |n| n["namespace"] == namespace }
  end

  def waits_metrics
    metrics = PrometheusText.parse(TaskerCore.metrics_text)
    { "rate_limit" => metrics.value("tasker_steps_waiting_for_limit", namespace: namespace, limit: "rate_limit"),
      "concurrency" => metrics.value("tasker_steps_waiting_for_limit", namespace: namespace, limit: "concurrency"),
      "tasks" => metrics.value("tasker_tasks_waiting_for_limit", namespace: namespace) }
  end

  it "counts steps waiting for a token, and steps and tasks waiting for a slot, exactly; a retry is not one" do
    @runtime = TaskerCore.start(orchestrator: true, worker: { namespaces: [namespace], concurrency: 4 })
    # Created one at a time (each commits): the first payment takes the
    # key's token and runs (then waits an hour for its retry); the other 3
    # wait for theirs, 100, 200 and 300 s away.
    rated = create("rated", 4, "merchant" => key)
    # The first charge and the first task take their key's one slot and are
    # held in their handlers; the others wait for it.
    charges = create("step_slot", 3, "customer" => key, "hold" => true)
    opened = create("task_slot", 3, "customer" => key, "hold" => true)
    @tasks = rated + charges + opened
    eventually("the first of each to run") do
      [rated.first.step("pay").reload.status, charges.first.step("charge").reload.status,
       opened.first.step("open").reload.status] == %w[waiting_for_retry in_progress in_progress]
    end

    expect(rated.drop(1).map { |t| t.step("pay").reload.status }).to eq(%w[enqueued enqueued enqueued])
    expect(rated.first.step("pay").retry_at).to be > Time.now + 3000
    expect(namespace_status).to eq(
      "namespace" => namespace, "tasks_pending" => 2, "tasks_in_progress" => 8, "steps_enqueued" => 3,
      "steps_in_progress" => 2, "steps_waiting_for_retry" => 1, "steps_stuck_in_progress" => 0,
      "steps_stuck_enqueued" => 0, "steps_enqueued_by_priority" => { "0" => 3 },
      "steps_waiting_for_rate_limit" => 3, "steps_waiting_for_slot" => 2, "tasks_waiting_for_slot" => 2
    )
    line = TaskerCore::OperatorReports.status.lines.find { |l| l.start_with?("  #{namespace} ") }
    expect(line).to match(/ tasks pending=2 in_progress=8 \| steps enqueued=3 in_progress=2 waiting_for_retry=1 /)
    expect(line).to end_with(" | waiting for a limit: steps_waiting_for_rate_limit=3 steps_waiting_for_slot=2 " \
                             "tasks_waiting_for_slot=2\n")
    expect(waits_metrics).to eq("rate_limit" => 3, "concurrency" => 2, "tasks" => 2)

    # The held ones finish, and each waiter in turn: nothing waits for a
    # slot any more, and the gauges fall back to 0.
    Limits::Tally.open!(key)
    (charges + opened).each { |task| expect(task.wait(timeout: 30).status).to eq("complete") }
    expect(namespace_status).to include("steps_waiting_for_rate_limit" => 3, "steps_waiting_for_slot" => 0,
                                        "tasks_waiting_for_slot" => 0, "tasks_pending" => 0)
    expect(waits_metrics).to eq("rate_limit" => 3, "concurrency" => 0, "tasks" => 0)
    expect(TaskerCore::OperatorReports.status).to match(
      /^  #{namespace} .*\| waiting for a limit: steps_waiting_for_rate_limit=3$/
    )

    # Cancelled, the payments wait for nothing.
    rated.each { |task| TaskerCore.cancel_task(task) }
    expect(namespace_status).to be_nil
    expect(waits_metrics).to eq("rate_limit" => 0, "concurrency" => 0, "tasks" => 0)
  end
end
