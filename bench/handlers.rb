# frozen_string_literal: true

module Bench
  # The bench's step handler: does nothing, so what is measured is the
  # engine (claim, hand-off, record, decide, enqueue), not the work.
  class Noop < TaskerCore::StepHandler::Base
    def call(_task, _sequence, _step)
      nil
    end
  end
end
