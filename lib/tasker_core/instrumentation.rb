# frozen_string_literal: true

require "active_support/notifications"

module TaskerCore
  # ActiveSupport::Notifications events, named "<event>.tasker_core":
  # - perform_step: around each handler run (task_uuid, step_uuid, step_name,
  #   namespace, handler, attempt, correlation_id; then outcome: "complete",
  #   "waiting_for_retry" or "error", and error_class/error_message)
  # - create_task, cancel_task, retry_step, resolve_step_manually: around
  #   each call, with the identifiers and, after it, the outcome.
  # - create_tasks: around each call (count; then task_uuids, in order).
  # Subscribe with ActiveSupport::Notifications.subscribe(/tasker_core/).
  module Instrumentation
    module_function

    def instrument(event, payload = {}, &block)
      ActiveSupport::Notifications.instrument("#{event}.tasker_core", payload, &block)
    end
  end
end
