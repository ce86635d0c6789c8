# frozen_string_literal: true

module Examples
  # The one handler of the tree and mixed workflows: one more than the sum
  # of its dependencies' results, or than n for the first step.
  class AddOne < TaskerCore::StepHandler::Base
    def call(task, sequence, _step)
      inputs = sequence.dependencies.map(&:results)
      1 + (inputs.empty? ? task.context.fetch("n") : inputs.sum)
    end
  end
end
