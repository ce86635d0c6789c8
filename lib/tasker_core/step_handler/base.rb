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
    #
    # `config` is the step's `handler.initialization` from the template (a
    # frozen Hash with string keys, empty when the template sets none). A
    # handler that defines `initialize(config)` receives it there; call
    # `super` to keep the reader.
    class Base
      attr_reader :config

      def initialize(config = {})
        super()
        @config = config
      end

      def logger
        TaskerCore.logger
      end
    end
  end
end
