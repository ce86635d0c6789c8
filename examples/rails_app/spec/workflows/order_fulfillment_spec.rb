# frozen_string_literal: true

# The order-fulfillment workflow. Most examples run it inline
# (TaskerCore::Testing, see rails_helper): Order.place! creates the task and,
# when its transaction commits, the workflow runs in this thread through
# the engine's SQL functions, inside the example's transaction. The last
# groups run the real engine.
RSpec.describe "order fulfillment" do
  let(:widget) { product("widget", price_cents: 1250, stock: 10) }
  let(:gadget) { product("gadget", price_cents: 4000, stock: 3) }

  # Every step: created pending, enqueued when ready, claimed, finished.
  def ran_once(outcome = "complete")
    [["", "pending"], %w[pending enqueued], %w[enqueued in_progress], ["in_progress", outcome]]
  end

  it "validates, reserves stock, charges and ships the order, each step once" do
    order = place_order({ widget => 2, gadget => 1 })
    task = order.fulfillment_task
    order.reload
    expect(order.charges.count).to eq(1)
    charge = order.charges.first

    expect(task).to be_complete
    expect(task.context).to eq("order_id" => order.id)
    expect(order).to have_attributes(status: "shipped", total_cents: 6500,
                                     tracking_number: format("TRK%08d", order.id))
    expect([order.inventory_reserved_at, order.shipped_at]).to all(be_present)
    expect([widget.reload.stock, gadget.reload.stock]).to eq([8, 2])
    expect(charge).to have_attributes(status: "succeeded", amount_cents: 6500, decline_reason: nil)
    expect(charge.gateway_reference).to match(/\Ach_\h{16}\z/)
    expect(task).to have_step("validate_order").with_result(order_id: order.id, total_cents: 6500, items: 3)
    expect(task).to have_step("reserve_inventory").with_result("reserved" => { widget.sku => 2, gadget.sku => 1 })
    expect(task).to have_step("charge_payment")
      .with_result("charge_id" => charge.id, "amount_cents" => 6500, "reference" => charge.gateway_reference)
    shipped = { "tracking_number" => order.tracking_number, "charge_reference" => charge.gateway_reference }
    expect(task).to have_step("ship_order").with_attempts(1).with_result(shipped)
    expect(step_rows(task)).to eq(%w[validate_order reserve_inventory charge_payment ship_order]
                                    .map { |name| [name, "complete", 1] })
    expect(history(task.transitions)).to eq([["", "pending"], %w[pending in_progress], %w[in_progress complete]])
    task.workflow_steps.each { |step| expect(history(step.transitions)).to eq(ran_once) }
    expect(task.step("ship_order").transitions.map(&:metadata).last)
      .to eq("worker" => "tasker_core-testing", "attempt" => 1)
    expect(events_of(order)).to eq([%w[validate_order validating], ["reserve_inventory", "reserving inventory"],
                                    ["charge_payment", "charging 6500 cents"], %w[ship_order shipping]])
  end

  it "on a declined card: records the decline, puts the stock back, ends the task in error" do
    order = place_order({ widget => 2 }, token: "tok_decline_insufficient_funds")
    task = order.fulfillment_task
    order.reload

    expect(task.status).to eq("error")
    expect(task).to have_step("charge_payment")
      .failed_with(TaskerCore::PermanentError, "payment for order #{order.id} declined: insufficient funds")
    expect(task).to have_step("ship_order").in_state("pending").with_attempts(0)
    expect(order).to have_attributes(status: "payment_declined", tracking_number: nil, shipped_at: nil,
                                     inventory_reserved_at: nil)
    expect(widget.reload.stock).to eq(10)
    expect(order.charges.map { |c| [c.status, c.amount_cents, c.decline_reason] })
      .to eq([["declined", 2500, "insufficient funds"]])
    expect(step_rows(task)).to eq([["validate_order", "complete", 1], ["reserve_inventory", "complete", 1],
                                   ["charge_payment", "error", 1], ["ship_order", "pending", 0]])
    expect(task.step("charge_payment").last_error).to include("retryable" => false, "attempt" => 1)
    expect(history(task.step("charge_payment").transitions)).to eq(ran_once("error"))
    expect(history(task.transitions).last).to eq(%w[in_progress error])
    expect(events_of(order).map(&:first)).to eq(%w[validate_order reserve_inventory charge_payment])
  end

  it "rejects an order with too little stock for good, taking nothing" do
    order = place_order({ widget => 1, gadget => 4 })
    task = order.fulfillment_task

    expect(task.status).to eq("error")
    expect(order.reload).to have_attributes(status: "out_of_stock", inventory_reserved_at: nil)
    # The widget was taken first; the reservation's transaction put it back.
    expect([widget.reload.stock, gadget.reload.stock]).to eq([10, 3])
    expect(step_rows(task)).to eq([["validate_order", "complete", 1], ["reserve_inventory", "error", 1],
                                   ["charge_payment", "pending", 0], ["ship_order", "pending", 0]])
    expect(task).to have_step("reserve_inventory")
      .failed_with(TaskerCore::PermanentError, "order #{order.id} is out of stock: #{gadget.sku}: 4 wanted, 3 in stock")
    expect(order.charges).to be_empty
  end

  it "retries a step that failed for a passing reason at once, counting the attempt" do
    calls = 0
    allow(PaymentGateway).to receive(:charge).and_wrap_original do |original, **args|
      calls += 1
      raise Timeout::Error, "gateway timed out" if calls == 1

      original.call(**args)
    end
    order = place_order({ widget => 1 })
    task = order.fulfillment_task

    expect(task).to be_complete
    expect(task).to have_step("charge_payment").in_state("complete").with_attempts(2)
    expect(history(task.step("charge_payment").transitions))
      .to eq([["", "pending"], %w[pending enqueued], %w[enqueued in_progress], %w[in_progress waiting_for_retry],
              %w[waiting_for_retry in_progress], %w[in_progress complete]])
    expect(task.step("charge_payment").last_error)
      .to include("class" => "Timeout::Error", "message" => "gateway timed out", "retryable" => true, "attempt" => 1)
    expect(order.reload.charges.map(&:status)).to eq(["succeeded"])
    expect(events_of(order).map(&:last))
      .to eq(["validating", "reserving inventory", "charging 1250 cents", "charging 1250 cents", "shipping"])
  end

  it "runs a workflow on its own with run_workflow" do
    order = Order.create!(customer_email: "ada@example.com", payment_token: "tok_visa", total_cents: 0)

    task = run_workflow(namespace: "fulfillment", name: "order_fulfillment", context: { order_id: order.id })

    expect(task.version).to eq("1.0.0")
    expect(task.status).to eq("error")
    expect(task).to have_step("validate_order").failed_with(TaskerCore::PermanentError, /has no line items/)
    expect(order.reload.status).to eq("rejected")
  end

  describe "driven step by step", tasker: :fake do
    it "creates the task without running it, then runs the steps the test asks for" do
      order = place_order({ widget => 1 })
      task = order.fulfillment_task

      expect(task.status).to eq("in_progress")
      expect(step_rows(task).map { |name, status, _| [name, status] })
        .to eq([%w[validate_order enqueued], %w[reserve_inventory pending], %w[charge_payment pending],
                %w[ship_order pending]])
      expect(TaskerCore::Testing.tasks).to eq([task])

      TaskerCore::Testing.run_step(task, "validate_order")
      expect(order.reload.status).to eq("validated")
      expect(task).to have_step("reserve_inventory").in_state("enqueued")
      expect { TaskerCore::Testing.run_step(task, "charge_payment") }
        .to raise_error(TaskerCore::Testing::NotRunnableError,
                        "step \"charge_payment\" of task #{task.task_uuid} (fulfillment/order_fulfillment) is " \
                        "pending, not ready to run (waiting on reserve_inventory; task is in_progress)")
      expect { task.wait(timeout: 1) }.to raise_error(TaskerCore::TimeoutError, /run_all or run_step/)

      expect(TaskerCore::Testing.run_all).to eq([task])
      expect(task.reload).to be_complete
      expect(order.reload.status).to eq("shipped")
      expect(TaskerCore::Testing.tasks).to be_empty
    end
  end

  describe "with the real engine: a worker and an orchestrator in this process", tasker: :real do
    self.use_transactional_tests = false
    run_tasker_around_each

    it "validates, reserves stock, charges and ships the order, later steps dispatched eagerly" do
      order = place_order({ widget => 2, gadget => 1 })
      task = order.fulfillment_task.wait(timeout: 30)

      expect(task).to be_complete
      expect(order.reload).to have_attributes(status: "shipped", tracking_number: format("TRK%08d", order.id))
      expect(step_rows(task)).to eq(%w[validate_order reserve_inventory charge_payment ship_order]
                                      .map { |name| [name, "complete", 1] })
      # Validation is enqueued with the task; each later step is run next by
      # the worker that finished the one before (eager dispatch, no queue hop).
      first, *rest = task.workflow_steps.to_a
      expect(history(first.transitions)).to eq(ran_once)
      rest.each do |step|
        expect(history(step.transitions)).to eq([["", "pending"], %w[pending in_progress], %w[in_progress complete]])
      end
    end
  end

  describe "placing an order inside the app's transaction", tasker: :real do
    self.use_transactional_tests = false

    def task_rows(uuid)
      TaskerCore::Models::Task.where(task_uuid: uuid).count
    end

    def queued_messages(uuid)
      ActiveRecord::Base.connection.select_value(
        ActiveRecord::Base.sanitize_sql_array(
          ["SELECT count(*) FROM pgmq.q_#{TaskerCore.queue_name('fulfillment')} WHERE message->>'task_uuid' = ?", uuid]
        )
      ).to_i
    end

    it "leaves neither order nor task nor message when the transaction rolls back" do
      counts = -> { [Order.count, LineItem.count, TaskerCore::Models::Task.count] }
      before = counts.call
      order_id = task_uuid = nil

      ActiveRecord::Base.transaction do
        order = place_order({ widget => 1 })
        order_id = order.id
        task_uuid = order.fulfillment_task_uuid
        # Inside the transaction the task and its first message exist.
        expect([task_rows(task_uuid), queued_messages(task_uuid)]).to eq([1, 1])
        raise ActiveRecord::Rollback
      end

      expect(counts.call).to eq(before)
      expect(Order.where(id: order_id)).to be_empty
      expect([task_rows(task_uuid), queued_messages(task_uuid)]).to eq([0, 0])
      expect(TaskerCore::Models::Task.where(identity_key: "order-#{order_id}")).to be_empty
    end
  end

  it "runs nothing when the order's transaction rolls back (inline)" do
    runs = []
    subscriber = ActiveSupport::Notifications.subscribe("perform_step.tasker_core") { |*, payload| runs << payload }
    stocked = widget # created outside the transaction that rolls back
    ActiveRecord::Base.transaction(requires_new: true) do
      place_order({ stocked => 1 })
      raise ActiveRecord::Rollback
    end

    expect(runs).to be_empty
    expect(widget.reload.stock).to eq(10)
  ensure
    ActiveSupport::Notifications.unsubscribe(subscriber)
  end
end
