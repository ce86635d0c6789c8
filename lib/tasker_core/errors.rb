# frozen_string_literal: true

module TaskerCore
  # Every error tasker_core raises, from Ruby or from the Rust core, is a
  # TaskerCore::Error. The native extension maps each Rust error kind to the
  # subclass of the same name.
  class Error < StandardError; end

  class ConfigurationError < Error; end
  class DatabaseError < Error; end
  class MessagingError < Error; end
  class TemplateError < Error; end
  class ValidationError < Error; end
  class NotFoundError < Error; end
  class StateError < Error; end
  class TimeoutError < Error; end
  class ShutdownError < Error; end
  # The database or the broker is down and its circuit breaker is open:
  # the call failed at once instead of waiting for a connection. Try again
  # later (TaskerCore.health shows when it answers again).
  class UnavailableError < Error; end

  # Raised by a step handler: the step failed but may succeed if tried
  # again, after `retry_after` seconds when given (else the template's
  # backoff). Any other StandardError is treated the same way.
  class RetryableError < Error
    attr_reader :retry_after

    def initialize(message = nil, retry_after: nil)
      super(message)
      @retry_after = retry_after
    end
  end

  # An attempt ran past the step's timeout_seconds; retried like any
  # retryable failure.
  class StepTimeoutError < RetryableError; end

  # Raised by a step handler: the step failed for good; no more attempts.
  class PermanentError < Error; end

  # A decision step's outcome that is not a valid decision (see
  # TaskerCore::Decision): the step fails for good.
  class DecisionError < PermanentError; end

  # Recorded (never raised) when a handler's thread was killed or threw
  # past the worker before the handler returned.
  class HandlerAbortedError < Error; end
end
