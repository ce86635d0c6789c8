# frozen_string_literal: true

require "spec_helper"
require_relative "../fixtures/handlers/limits_handlers"

# Concurrency limits (`concurrency: { key:, max: }` on a step or a
# template), end to end with an orchestrator and a worker of 10 threads in
# this process. The handlers measure, per key, how many of them run at
# once (Limits::Tally).
RSpec.describe "concurrency limits" do
  run_tasker_around_each(namespaces: %w[limits], concurrency: 10)

  before { Limits::Tally.reset! }

  # Keys of this example's own: tasks of other examples (or runs) sharing
  # the database do not share its slots.
  let(:suffix) { SecureRandom.hex(3) }
  let(:customers) { %w[acme globex initech].map { |c| "#{c}_#{suffix}" } }

  # 50 tasks over 3 customers, created in one transaction: none has started
  # when the limit is first applied, so exactly 2 per customer go at once.
  def create_fifty(name)
    ActiveRecord::Base.transaction do
      Array.new(50) do |i|
        TaskerCore.create_task(namespace: "limits", name: name, version: "1.0.0",
                               context: { customer: customers[i % 3], n: i })
      end
    end
  end

  # What rake tasker:status and the dashboard show: each slot's waiters.
  def limit_waits
    TaskerCore.concurrency_limits.select { |l| l["waiting"].positive? && l["slot"].end_with?(suffix) }
              .to_h { |l| [l["slot"], l["waiting"]] }
  end

  def waits(step)
    step.transitions.select { |t| t.from_state == "pending" && t.to_state == "pending" }
  end

  it "runs at most 2 charges per customer at once, the others waiting and then running in order" do
    tasks = create_fifty("per_customer_step")
    charges = tasks.map { |t| t.step("charge") }
    tasks.each { |t| t.wait(timeout: 60) }
    expect(tasks.map(&:status).uniq).to eq(["complete"])
    expect(Limits::Tally.max.slice(*customers)).to eq(customers.to_h { |c| [c, 2] })
    expect(tasks.map { |t| t.step("receipt").results["receipt_for"] }).to eq(Array.new(50) { |i| customers[i % 3] })

    # The history shows the waits: the first two charges of each customer
    # never waited; the other 44 waited once, then were enqueued when a
    # slot came free.
    waited = charges.map { |c| waits(c.reload) }
    expect(waited.map(&:size)).to eq(Array.new(50) { |i| i < 6 ? 0 : 1 })
    waited.each_with_index.drop(6).each do |(wait), i|
      expect(wait.metadata).to eq("waiting_for" => "concurrency", "max" => 2,
                                  "slot" => "step:limits/per_customer_step/charge=#{customers[i % 3]}")
    end
    expect(charges.drop(6).map { |c| history(c.transitions) }.uniq).to eq(
      [[["", "pending"], %w[pending pending], %w[pending enqueued], %w[enqueued in_progress],
        %w[in_progress complete]]]
    )
    expect(limit_waits).to eq({})
  end

  it "runs at most 2 tasks per customer at once, the others staying pending until one ends" do
    tasks = create_fifty("per_customer_task")
    expect(tasks.map(&:status).tally).to eq("in_progress" => 6, "pending" => 44)

    tasks.each { |t| t.wait(timeout: 60) }
    expect(tasks.map(&:status).uniq).to eq(["complete"])
    expect(Limits::Tally.max.slice(*customers)).to eq(customers.to_h { |c| [c, 2] })
    expect(tasks.take(6).map { |t| history(t.transitions) }.uniq).to eq(
      [[["", "pending"], %w[pending in_progress], %w[in_progress complete]]]
    )
    tasks.drop(6).each_with_index do |task, i|
      expect(history(task.transitions)).to eq([["", "pending"], %w[pending in_progress], %w[in_progress complete]])
      expect(task.transitions.second.metadata).to eq(
        "reason" => "concurrency", "slot" => "task:limits/per_customer_task=#{customers[(i + 6) % 3]}"
      )
    end
    expect(limit_waits).to eq({})
  end

  it "shows the steps and tasks waiting for each slot in status, rake tasker:status and the dashboard's data" do
    slow = { customer: "slow_#{suffix}", hold: true }
    steps = Array.new(5) do
      TaskerCore.create_task(namespace: "limits", name: "per_customer_step", version: "1.0.0", context: slow)
    end
    tasks = Array.new(3) do
      TaskerCore.create_task(namespace: "limits", name: "per_customer_task", version: "1.0.0", context: slow)
    end
    # The first two of each are held in their handlers: the others wait.
    report = TaskerCore::OperatorReports.status
    expect(report).to include("concurrency limits (in use / max, waiting):")
    expect(report).to match(%r{^  step:limits/per_customer_step/charge=slow_#{suffix} +2/2 waiting=3$})
    expect(report).to match(%r{^  task:limits/per_customer_task=slow_#{suffix} +2/2 waiting=1$})
    expect(limit_waits).to eq("step:limits/per_customer_step/charge=slow_#{suffix}" => 3,
                              "task:limits/per_customer_task=slow_#{suffix}" => 1)
    expect(TaskerCore.concurrency_limits.select { |l| l["slot"].end_with?(suffix) }).to eq(
      [{ "slot" => "step:limits/per_customer_step/charge=slow_#{suffix}", "max" => 2, "in_use" => 2, "waiting" => 3 },
       { "slot" => "task:limits/per_customer_task=slow_#{suffix}", "max" => 2, "in_use" => 2, "waiting" => 1 }]
    )
    Limits::Tally.open!(slow[:customer])
    (steps + tasks).each { |t| t.wait(timeout: 60) }
    expect((steps + tasks).map(&:status).uniq).to eq(["complete"])
    expect(limit_waits).to eq({})
  ensure
    Limits::Tally.open!("slow_#{suffix}")
  end

  # Waiters take their turn as the queues serve messages: by priority, and
  # among equal priorities the oldest first (a waiter is passed only by
  # higher-priority ones that came less than the difference x
  # messaging.priority_aging_ms after it: 10 s a level here).
  it "hands freed slots to the waiting tasks of highest priority first, then the oldest" do
    customer = "ranked_#{suffix}"
    holders = Array.new(2) do
      TaskerCore.create_task(namespace: "limits", name: "per_customer_task", version: "1.0.0",
                             context: { customer: customer, hold: true })
    end
    waiters = [0, -5, 5, 0].each_with_index.map do |priority, i|
      TaskerCore.create_task(namespace: "limits", name: "per_customer_task", version: "1.0.0",
                             context: { customer: customer, n: i }, priority: priority)
    end
    expect((holders + waiters).map(&:status)).to eq(%w[in_progress in_progress pending pending pending pending])
    Limits::Tally.open!(customer)
    (holders + waiters).each { |t| t.wait(timeout: 30) }
    expect((holders + waiters).map(&:status).uniq).to eq(["complete"])
    started = waiters.sort_by { |t| t.transitions.second.created_at }
    expect(started.map { |t| [t.context["n"], t.priority] }).to eq([[2, 5], [0, 0], [3, 0], [1, -5]])
    expect(limit_waits).to eq({})
  ensure
    Limits::Tally.open!("ranked_#{suffix}")
  end

  it "hands a cancelled task's slot to the next waiting task" do
    first, second = Array.new(2) do
      TaskerCore.create_task(namespace: "limits", name: "per_customer_task", version: "1.0.0",
                             context: { customer: "solo_#{suffix}", nap: 0.05 })
    end
    third = TaskerCore.create_task(namespace: "limits", name: "per_customer_task", version: "1.0.0",
                                   context: { customer: "solo_#{suffix}", nap: 0.05 })
    expect([first, second, third].map(&:status)).to eq(%w[in_progress in_progress pending])
    expect(TaskerCore.cancel_task(third)).to be(true)
    [first, second].each { |t| t.wait(timeout: 30) }
    expect([first, second, third].map { |t| t.reload.status }).to eq(%w[complete complete cancelled])
    expect(history(third.transitions)).to eq([["", "pending"], %w[pending cancelled]])
    expect(limit_waits).to eq({})
  end

  it "hands the slot of a running task that is cancelled to the waiting task, which then runs" do
    customer = "held_#{suffix}"
    first, second, third = [5, 0.05, 0.05].map do |nap|
      TaskerCore.create_task(namespace: "limits", name: "per_customer_task", version: "1.0.0",
                             context: { customer: customer, nap: nap })
    end
    expect([first, second, third].map(&:status)).to eq(%w[in_progress in_progress pending])
    expect(TaskerCore.cancel_task(first)).to be(true)
    [second, third].each { |t| t.wait(timeout: 30) }
    expect([first, second, third].map { |t| t.reload.status }).to eq(%w[cancelled complete complete])
    expect(history(third.transitions).first(2)).to eq([["", "pending"], %w[pending in_progress]])
    expect(third.transitions.second.metadata).to include("reason" => "concurrency")
    slot = "task:limits/per_customer_task=#{customer}"
    expect(ActiveRecord::Base.connection.select_value(
             "SELECT in_use FROM tasker_concurrency_slots WHERE slot = #{ActiveRecord::Base.connection.quote(slot)}"
           )).to eq(0)
    expect(limit_waits).to eq({})
  end
end
