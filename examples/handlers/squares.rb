# frozen_string_literal: true

# Step handlers for the example workflows. Each squares its input: the
# task's n for a first step, else its dependencies' results.
module Examples
  module Linear
    class SquareOne < TaskerCore::StepHandler::Base
      def call(task, _sequence, _step)
        task.context.fetch("n")**2
      end
    end

    class SquareTwo < TaskerCore::StepHandler::Base
      def call(_task, sequence, _step)
        sequence.result_of("square_one")**2
      end
    end

    class SquareThree < TaskerCore::StepHandler::Base
      def call(_task, sequence, _step)
        sequence.result_of("square_two")**2
      end
    end

    class SquareFour < TaskerCore::StepHandler::Base
      def call(_task, sequence, _step)
        sequence.result_of("square_three")**2
      end
    end
  end

  module Diamond
    class Start < TaskerCore::StepHandler::Base
      def call(task, _sequence, _step)
        task.context.fetch("n")**2
      end
    end

    class Left < TaskerCore::StepHandler::Base
      def call(_task, sequence, _step)
        sequence.result_of("start")**2
      end
    end

    class Right < TaskerCore::StepHandler::Base
      def call(_task, sequence, _step)
        sequence.result_of("start")**2
      end
    end

    class Finish < TaskerCore::StepHandler::Base
      def call(_task, sequence, _step)
        (sequence.result_of("left") * sequence.result_of("right"))**2
      end
    end
  end
end
