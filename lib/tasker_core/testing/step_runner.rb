# frozen_string_literal: true

require "timeout"

module TaskerCore
  module Testing
    # Runs a task's steps in the calling thread, as a worker would: claim
    # (tasker_claim_steps), run the handler, record the outcome
    # (tasker_record_outcomes, which enqueues the dependents it makes ready
    # and finalizes the task), all on ActiveRecord's connection.
    class StepRunner
      RUNNABLE = %w[enqueued waiting_for_retry].freeze
      # The worker the history names.
      WORKER = "tasker_core-testing"
      # Claims are never stale here: every step runs to its outcome at once.
      STALE_AFTER_SECONDS = 86_400

      def initialize(task)
        @task = task
        @namespaces = SqlFunctions.step_namespaces(task.task_uuid)
      end

      # Runs ready steps, in template order, until none is left.
      def run_to_end
        loop do
          ready = Models::WorkflowStep.where(task_uuid: @task.task_uuid, status: RUNNABLE).order(:position).to_a
          break if ready.empty?

          ready.each { |step| run_step(step) }
        end
      end

      # Claims and runs one ready step; returns its new state.
      def run_step(step)
        claim = SqlFunctions.claim_steps([step.step_uuid], worker: WORKER, namespaces: @namespaces,
                                                           stale_after_seconds: STALE_AFTER_SECONDS).first
        unless claim
          raise NotRunnableError, "step #{step.name.inspect} of task #{@task.task_uuid} could not be claimed " \
                                  "(it is #{step.reload.status})"
        end

        perform(claim)
      end

      private

      def perform(claim)
        payload = { task_uuid: claim["task_uuid"], step_uuid: claim["step_uuid"], step_name: claim["step_name"],
                    namespace: claim["namespace"], attempt: claim["attempts"], handler: claim["handler_callable"],
                    correlation_id: claim["task_row"]["correlation_id"] }
        Instrumentation.instrument("perform_step", payload) do
          payload[:outcome] = record(claim, payload, *outcome_of(claim))
        end
      end

      # [completed, result or error, retryable]
      def outcome_of(claim)
        [true, run_handler(claim), false]
      rescue PermanentError => e
        [false, e, false]
      rescue StandardError => e
        [false, e, true]
      end

      def run_handler(claim)
        task = Models::Task.instantiate(claim["task_row"])
        step = Models::WorkflowStep.instantiate(claim["step_row"])
        # The named step's name: a fan-out child's is `<fan-out step>[]`.
        config = TaskerCore.client.handler_config(task.namespace, task.name, task.version, claim["step_name"])
        handler = StepHandler::Resolver.build(claim["handler_callable"], config)
        result = with_timeout(claim["timeout_seconds"]) do
          in_savepoint { handler.call(task, StepSequence.new(task, step), step) }
        end
        Decision.result_of(result, decision: claim["decision"] == true,
                                   step: "#{step.name} of template #{task.namespace}/#{task.name}@#{task.version}")
      end

      # Not joinable: a `transaction` in the handler makes a savepoint of its
      # own, rolled back when it raises, as it would be in production. A
      # handler that fails with a database error leaves the transaction
      # unusable; its savepoint is rolled back so the test's transaction
      # goes on. Any other failure keeps the handler's writes, as a worker's
      # autocommitted writes are kept.
      def in_savepoint
        failure = nil
        result = Models::Base.transaction(requires_new: true, joinable: false) do
          yield
        rescue ActiveRecord::StatementInvalid
          raise
        rescue StandardError => e
          failure = e
          nil
        end
        raise failure if failure

        result
      end

      def with_timeout(seconds, &block)
        return yield unless seconds

        Timeout.timeout(seconds, StepTimeoutError, "step exceeded its timeout of #{seconds} s", &block)
      end

      # Records the outcome as the worker's recorder does (same error shape
      # and history metadata; no backoff); returns the step's new state.
      def record(claim, payload, completed, outcome, retryable)
        attempt = claim["attempts"]
        unless completed
          retryable &&= claim["retryable"]
          payload.merge!(error_class: outcome.class.name, error_message: outcome.message)
          outcome = { "class" => outcome.class.name, "message" => outcome.message,
                      "backtrace" => Array(outcome.backtrace).first(50), "attempt" => attempt,
                      "retryable" => retryable, "worker" => WORKER }
        end
        rows = SqlFunctions.record_outcome(step_uuid: claim["step_uuid"], attempt: attempt, completed: completed,
                                           payload: outcome, retryable: retryable, delay_ms: 0,
                                           meta: { "worker" => WORKER, "attempt" => attempt },
                                           worker: WORKER, namespaces: @namespaces)
        rows.find { |r| r["kind"] == "outcome" }&.fetch("state")
      end
    end
  end
end
