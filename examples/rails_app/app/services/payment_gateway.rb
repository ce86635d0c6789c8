# frozen_string_literal: true

require "securerandom"

# A stand-in for a card processor, scripted by the card token: tokens that
# start with "tok_decline" are declined (the rest of the token is the
# reason), any other token is approved. PAYMENT_GATEWAY_LATENCY (seconds)
# makes each call that slow, like a real network call.
module PaymentGateway
  Result = Struct.new(:approved, :reference, :reason, keyword_init: true) do
    def declined?
      !approved
    end
  end

  module_function

  def charge(token:, amount_cents:)
    raise ArgumentError, "amount must be positive, got #{amount_cents}" unless amount_cents.positive?

    sleep Float(ENV.fetch("PAYMENT_GATEWAY_LATENCY", "0"))
    reference = "ch_#{SecureRandom.hex(8)}"
    if token.start_with?("tok_decline")
      reason = token.delete_prefix("tok_decline").delete_prefix("_").tr("_", " ")
      Result.new(approved: false, reference: reference, reason: reason.empty? ? "card declined" : reason)
    else
      Result.new(approved: true, reference: reference)
    end
  end
end
