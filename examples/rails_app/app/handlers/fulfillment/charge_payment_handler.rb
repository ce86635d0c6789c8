# frozen_string_literal: true

module Fulfillment
  # Charges the order's total through the payment gateway. A declined card
  # fails the task for good: the decline is recorded, the reserved stock
  # goes back on the shelf and the order is marked payment_declined. Run
  # again after a success, it charges nothing and returns the same charge.
  class ChargePaymentHandler < TaskerCore::StepHandler::Base
    def call(task, sequence, step)
      order = Order.find(task.context.fetch("order_id"))
      charge = order.charges.succeeded.first || charge!(order, sequence.result_of("validate_order"), step)
      { "charge_id" => charge.id, "amount_cents" => charge.amount_cents, "reference" => charge.gateway_reference }
    end

    private

    def charge!(order, validation, step)
      amount = validation.fetch("total_cents")
      order.record_event!(step.name, "charging #{amount} cents")
      result = PaymentGateway.charge(token: order.payment_token, amount_cents: amount)
      if result.declined?
        decline!(order, amount, result)
        raise TaskerCore::PermanentError, "payment for order #{order.id} declined: #{result.reason}"
      end

      Order.transaction do
        order.update!(status: "paid")
        order.charges.create!(status: "succeeded", amount_cents: amount, gateway_reference: result.reference)
      end
    end

    def decline!(order, amount, result)
      Order.transaction do
        order.charges.create!(status: "declined", amount_cents: amount, gateway_reference: result.reference,
                              decline_reason: result.reason)
        order.release_inventory!
        order.update!(status: "payment_declined")
      end
    end
  end
end
