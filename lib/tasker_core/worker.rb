# frozen_string_literal: true

module TaskerCore
  # Runs step handlers in this Ruby process. The Rust core polls the
  # namespace queues and claims steps; `concurrency` Ruby threads each wait
  # for a job with the GVL released, run its handler with an ActiveRecord
  # connection checked out for that step only (inside the configured
  # around_step: in Rails, the app's reloader), and report the outcome.
  class Worker
    POLL_SLICE = 0.25

    attr_reader :namespaces, :concurrency

    def initialize(namespaces:, concurrency: 4, client: TaskerCore.client)
      @namespaces = Array(namespaces).map(&:to_s)
      @concurrency = Integer(concurrency)
      @client = client
      @around_step = TaskerCore.configuration.around_step || ->(&run) { run.call }
      @stopping = false
    end

    # Checks, before taking any work, that every handler the namespaces'
    # templates name exists and that ActiveRecord's pool can serve every
    # thread; raises ConfigurationError or TemplateError naming the problem.
    def start
      check_connection_pool!
      @around_step.call { check_handlers! }
      @native = Native::Worker.start(@client, @namespaces, @concurrency)
      @threads = WorkerThreads.new(@concurrency) { run_loop }
      self
    end

    # Worker threads alive now: `concurrency` while the worker runs (a
    # thread a handler ended is replaced at once).
    def alive_threads
      @threads.alive
    end

    # How many threads were replaced because a handler ended its thread.
    def threads_replaced
      @threads.replaced
    end

    def id
      @native&.id
    end

    def running?
      !@native.nil? && !@stopping && @native.running?
    end

    # Stops taking work; steps being run finish (up to `timeout` seconds);
    # steps claimed but not started are released for another worker.
    def stop(timeout: 10)
      return unless @native

      @threads.stop_replacing
      @stopping = true
      deadline = monotonic + timeout
      @threads.join(deadline)
      @native.shutdown([deadline - monotonic, 0.1].max)
    end

    private

    def run_loop
      until @stopping
        job = next_job
        perform_reported(job) if job
      end
    end

    # A failure to take the next job is logged and the wait tried again:
    # the thread stays.
    def next_job
      @native.next_job(POLL_SLICE)
    rescue StandardError => e
      TaskerCore.logger.error("tasker worker thread #{Thread.current.name} could not take a job: " \
                              "#{e.class}: #{e.message}")
      sleep POLL_SLICE
      nil
    end

    # A report that cannot be recorded (the database is unreachable, say)
    # costs this step, not the thread: the claim goes stale without
    # heartbeats and the step runs again, attempt + 1.
    def perform_reported(job)
      perform(job)
    rescue StandardError => e
      TaskerCore.logger.error("tasker worker could not record step #{job[:step_uuid]}: #{e.class}: #{e.message}; " \
                              "it runs again once its claim goes stale")
    end

    def perform(job)
      payload = job.slice(:task_uuid, :step_uuid, :step_name, :namespace, :attempt, :correlation_id)
                   .merge(handler: job[:handler_callable])
      Instrumentation.instrument("perform_step", payload) { payload[:outcome] = run_handler(job, payload) }
    end

    # Runs the handler and reports its outcome whatever the handler does:
    # returns a value (one JSON cannot hold is a permanent failure), raises
    # anything (Exception, SystemStackError, SystemExit included), or kills
    # its thread (reported on the way out, in the ensure). Returns the step's
    # state.
    def run_handler(job, payload)
      outcome = nil
      begin
        outcome = [:complete, call_handler(job)]
      rescue Exception => e # rubocop:disable Lint/RescueException
        outcome = [:fail, e]
      ensure
        outcome ||= [:fail, HandlerAbortedError.new("the handler's thread was killed before the handler returned")]
        state = report(job, outcome, payload)
      end
      state
    end

    def call_handler(job)
      @around_step.call do
        with_step_connection do
          task, step = models_of(job)
          handler = handler_for(job)
          with_timeout(job[:timeout_seconds]) { handler.call(task, StepSequence.new(task, step), step) }
        end
      end
    end

    def report(job, (kind, value), payload)
      step_uuid = job.fetch(:step_uuid)
      if kind == :complete
        begin
          value = Decision.result_of_job(value, job)
          JsonValue.check!(value, "the result of step #{job[:step_name]}")
        rescue ValidationError, DecisionError => e
          return report_failure(step_uuid, e, payload, retryable: false)
        end
        return @native.complete(step_uuid, value)
      end
      case value
      when PermanentError then report_failure(step_uuid, value, payload, retryable: false)
      when RetryableError
        report_failure(step_uuid, value, payload, retryable: true, retry_after: value.retry_after)
      else report_failure(step_uuid, value, payload, retryable: true)
      end
    end

    # The task and step as the claim left them: the claim returns their
    # rows (as JSON text, see Native::Worker#next_job), so building the
    # models costs no query.
    def models_of(job)
      [Models::Task.instantiate(JSON.parse(job.fetch(:task))),
       Models::WorkflowStep.instantiate(JSON.parse(job.fetch(:step)))]
    end

    # The step's ActiveRecord connection is checked out when the handler
    # first uses one (a checkout costs a round trip: ActiveRecord verifies
    # the connection) and returned to the pool when the step ends.
    def with_step_connection
      yield
    ensure
      ActiveRecord::Base.connection_pool.release_connection
    end

    def check_connection_pool!
      size = ActiveRecord::Base.connection_pool.size
      return if size >= @concurrency

      raise ConfigurationError,
            "ActiveRecord's pool has #{size} connections but the worker runs #{@concurrency} threads; " \
            "raise pool: in config/database.yml (or lower the worker's concurrency)"
    end

    def check_handlers!
      problems = @client.handlers(@namespaces).filter_map do |template, step, callable|
        handler_class(callable)
        nil
      rescue TemplateError => e
        "template #{template} step #{step.inspect}: #{e.message}"
      end
      return if problems.empty?

      raise TemplateError, "worker for #{@namespaces.join(', ')} cannot start: #{problems.join('; ')}"
    end

    # The template's timeout_seconds bounds one attempt; exceeding it is a
    # retryable failure (Ruby's Timeout interrupts the handler's thread).
    def with_timeout(seconds, &block)
      return yield unless seconds

      Timeout.timeout(seconds, StepTimeoutError, "step exceeded its timeout of #{seconds} s", &block)
    end

    def report_failure(step_uuid, error, payload, retryable:, retry_after: nil)
      failure = Failure.of(error, retryable: retryable, retry_after: retry_after)
      payload.merge!(error_class: failure["error_class"], error_message: failure["message"])
      @native.fail(step_uuid, failure)
    end

    # The handler with its step's handler.initialization settings, which
    # the claim returned with the step.
    def handler_for(job)
      StepHandler::Resolver.build(job.fetch(:handler_callable), job.fetch(:handler_config))
    end

    def handler_class(callable)
      StepHandler::Resolver.handler_class(callable)
    end

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
  end
end
