# frozen_string_literal: true

module TaskerCore
  module StepHandler
    # Subclass and define `call(task, sequence, step)`:
    # - task, step: TaskerCore::Models::Task / WorkflowStep (ActiveRecord);
    # - sequence: TaskerCore::StepSequence (`sequence.result_of("name")`).
    # Return the step's result (anything JSON can hold). Raise
    # TaskerCore::RetryableError (optionally with retry_after:) or
    # TaskerCore::PermanentError to fail; any other exception counts as
    # retryable. The worker refuses a handler class without #call.
    class Base
      def logger
        TaskerCore.logger
      end
    end
  end
end
