# frozen_string_literal: true

# The order-fulfillment workflow end to end: TaskerCore.start runs an
# orchestrator and a worker in this process; the handlers in
# app/handlers/fulfillment work on the app's own models.
RSpec.describe "order fulfillment" do
  let(:widget) { product("widget", price_cents: 1250, stock: 10) }
  let(:gadget) { product("gadget", price_cents: 4000, stock: 3) }

  context "with a worker and an orchestrator in this process" do
    run_tasker_around_each

    it "validates, reserves stock, charges and ships the order, each step once" do
      order = place_order({ widget => 2, gadget => 1 })
      task = order.fulfillment_task.wait(timeout: 30)
      order.reload
      expect(order.charges.count).to eq(1)
      charge = order.charges.first

      expect(task.status).to eq("complete")
      expect(task.context).to eq("order_id" => order.id)
      expect(order).to have_attributes(status: "shipped", total_cents: 6500,
                                       tracking_number: format("TRK%08d", order.id))
      expect([order.inventory_reserved_at, order.shipped_at]).to all(be_present)
      expect([widget.reload.stock, gadget.reload.stock]).to eq([8, 2])
      expect(charge).to have_attributes(status: "succeeded", amount_cents: 6500, decline_reason: nil)
      expect(charge.gateway_reference).to match(/\Ach_\h{16}\z/)
      results = {
        "validate_order" => { "order_id" => order.id, "total_cents" => 6500, "items" => 3 },
        "reserve_inventory" => { "reserved" => { widget.sku => 2, gadget.sku => 1 } },
        "charge_payment" => { "charge_id" => charge.id, "amount_cents" => 6500,
                              "reference" => charge.gateway_reference },
        "ship_order" => { "tracking_number" => order.tracking_number, "charge_reference" => charge.gateway_reference }
      }
      expect(task.workflow_steps.map { |s| [s.name, s.status, s.results, s.attempts] })
        .to eq(results.map { |name, result| [name, "complete", result, 1] })
      expect(history(task.transitions)).to eq([["", "pending"], %w[pending in_progress], %w[in_progress complete]])
      # Validation is enqueued with the task; each later step is run next by
      # the worker that finished the one before (eager dispatch, no queue hop).
      first, *rest = task.workflow_steps.to_a
      expect(history(first.transitions)).to eq([["", "pending"], %w[pending enqueued], %w[enqueued in_progress],
                                                %w[in_progress complete]])
      rest.each do |step|
        expect(history(step.transitions)).to eq([["", "pending"], %w[pending in_progress], %w[in_progress complete]])
      end
      expect(events_of(order)).to eq([%w[validate_order validating], ["reserve_inventory", "reserving inventory"],
                                      ["charge_payment", "charging 6500 cents"], %w[ship_order shipping]])
    end

    it "on a declined card: records the decline, puts the stock back, ends the task in error" do
      order = place_order({ widget => 2 }, token: "tok_decline_insufficient_funds")
      task = order.fulfillment_task.wait(timeout: 30)
      order.reload

      expect(task.status).to eq("error")
      expect(order).to have_attributes(status: "payment_declined", tracking_number: nil, shipped_at: nil,
                                       inventory_reserved_at: nil)
      expect(widget.reload.stock).to eq(10)
      expect(order.charges.map { |c| [c.status, c.amount_cents, c.decline_reason] })
        .to eq([["declined", 2500, "insufficient funds"]])
      expect(step_rows(task)).to eq([["validate_order", "complete", 1], ["reserve_inventory", "complete", 1],
                                     ["charge_payment", "error", 1], ["ship_order", "pending", 0]])
      expect(task.step("charge_payment").last_error)
        .to include("class" => "TaskerCore::PermanentError", "retryable" => false,
                    "message" => "payment for order #{order.id} declined: insufficient funds")
      expect(history(task.step("charge_payment").transitions).last).to eq(%w[in_progress error])
      expect(history(task.transitions).last).to eq(%w[in_progress error])
      expect(events_of(order).map(&:first)).to eq(%w[validate_order reserve_inventory charge_payment])
    end

    it "rejects an order with too little stock for good, taking nothing" do
      order = place_order({ widget => 1, gadget => 4 })
      task = order.fulfillment_task.wait(timeout: 30)

      expect(task.status).to eq("error")
      expect(order.reload).to have_attributes(status: "out_of_stock", inventory_reserved_at: nil)
      expect([widget.reload.stock, gadget.reload.stock]).to eq([10, 3])
      expect(step_rows(task)).to eq([["validate_order", "complete", 1], ["reserve_inventory", "error", 1],
                                     ["charge_payment", "pending", 0], ["ship_order", "pending", 0]])
      expect(task.step("reserve_inventory").last_error["message"])
        .to eq("order #{order.id} is out of stock: #{gadget.sku}: 4 wanted, 3 in stock")
      expect(order.charges).to be_empty
    end
  end

  describe "placing an order inside the app's transaction" do
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
end
