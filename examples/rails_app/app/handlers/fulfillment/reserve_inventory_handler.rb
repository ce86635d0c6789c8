# frozen_string_literal: true

module Fulfillment
  # Takes the order's quantities out of stock (once, even if run again).
  class ReserveInventoryHandler < TaskerCore::StepHandler::Base
    def call(task, _sequence, step)
      order = Order.find(task.context.fetch("order_id"))
      order.record_event!(step.name, "reserving inventory")
      { "reserved" => order.reserve_inventory! }
    rescue Order::OutOfStock => e
      order.update!(status: "out_of_stock")
      raise TaskerCore::PermanentError, "order #{order.id} is out of stock: #{e.message}"
    end
  end
end
