# frozen_string_literal: true

module Bench
  # The bench's step handler: does nothing, so what is measured is the
  # engine (claim, hand-off, record, decide, enqueue), not the work.
  class Noop < TaskerCore::StepHandler::Base
    def call(_task, _sequence, _step)
      nil
    end
  end

  # The fan-out step of dynamic_fanout: the context's `width` items (its
  # children are Noop).
  class Items < TaskerCore::StepHandler::Base
    def call(task, _sequence, _step)
      { "items" => Array.new(task.context.fetch("width")) { |i| i } }
    end
  end
end
