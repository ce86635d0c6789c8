# frozen_string_literal: true

module Fulfillment
  # Checks the order can be fulfilled; an invalid order is rejected for good.
  class ValidateOrderHandler < TaskerCore::StepHandler::Base
    def call(task, _sequence, step)
      order = Order.find(task.context.fetch("order_id"))
      order.record_event!(step.name, "validating")
      problems = order.problems
      unless problems.empty?
        order.update!(status: "rejected")
        raise TaskerCore::PermanentError, "order #{order.id} cannot be fulfilled: #{problems.join('; ')}"
      end

      order.update!(status: "validated") if order.status == "pending"
      { "order_id" => order.id, "total_cents" => order.total_cents, "items" => order.line_items.sum(&:quantity) }
    end
  end
end
