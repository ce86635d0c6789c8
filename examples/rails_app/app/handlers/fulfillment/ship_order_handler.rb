# frozen_string_literal: true

module Fulfillment
  # Hands the paid order to the carrier: a tracking number, once.
  class ShipOrderHandler < TaskerCore::StepHandler::Base
    def call(task, sequence, step)
      order = Order.find(task.context.fetch("order_id"))
      order.record_event!(step.name, "shipping")
      unless order.tracking_number
        order.update!(status: "shipped", tracking_number: format("TRK%08d", order.id), shipped_at: Time.current)
      end
      { "tracking_number" => order.tracking_number,
        "charge_reference" => sequence.result_of("charge_payment").fetch("reference") }
    end
  end
end
