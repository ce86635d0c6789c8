# frozen_string_literal: true

module TaskerCore
  # Hands the Rust core's log events (connections, retries, recoveries,
  # poison messages, ...) to TaskerCore.logger — Rails.logger under Rails —
  # at their own level, with the task, step and correlation ids they carry:
  #
  #   [tasker_core::orchestration::sweeper] recovering a stuck step task_uuid=... step_uuid=... was="in_progress"
  #
  # TASKER_LOG picks what is kept, in RUST_LOG syntax (default: our own
  # events at info and up, other libraries' at warn and up). One thread per
  # process drains the events with the GVL released; it is started with the
  # native client and again after a fork.
  module LogPump
    # lapin's own report of a message returned as unroutable is left out:
    # the send fails with a TaskerCore::MessagingError naming the queue.
    DEFAULT_FILTER = "tasker_core=info,lapin::returned_messages=error,warn"
    LEVELS = { "ERROR" => :error, "WARN" => :warn, "INFO" => :info, "DEBUG" => :debug, "TRACE" => :debug }.freeze
    BATCH = 256
    FLUSH_WAIT = 5 # seconds

    class << self
      def start(filter = ENV.fetch("TASKER_LOG", DEFAULT_FILTER))
        return @thread if @pid == ::Process.pid && @thread&.alive?

        Native::Log.install(filter)
        # Spans still buffered for the OTLP exporter are sent before exit.
        at_exit { Native::Log.flush_traces } unless @pid
        @pid = ::Process.pid
        @flushes = Thread::Queue.new
        @thread = Thread.new do
          Thread.current.name = "tasker-log"
          loop do
            pump(0.5)
            answer_flushes
          end
        end
      end

      # Writes every event emitted so far, e.g. before the process exits.
      # The log thread does it (only it drains, so no event is in a batch
      # read but not yet written), and this waits for it.
      def flush
        return drain_all unless @thread&.alive? && @pid == ::Process.pid && Thread.current != @thread

        done = Thread::Queue.new
        @flushes << done
        deadline = Time.now + FLUSH_WAIT
        sleep 0.01 while done.empty? && Time.now < deadline
      end

      private

      def answer_flushes
        until @flushes.empty?
          done = @flushes.pop
          drain_all
          done << true
        end
      end

      def drain_all
        nil while pump(0).positive?
      end

      # Writes the events waiting (up to `timeout` seconds for the first);
      # returns how many.
      def pump(timeout)
        lines = Native::Log.drain(BATCH, timeout)
        lines.each do |level, target, message|
          TaskerCore.logger.public_send(LEVELS.fetch(level, :info), "[#{target}] #{message}")
        end
        lines.size
      rescue StandardError => e
        warn "tasker_core: writing a log event failed: #{e.class}: #{e.message}"
        0
      end
    end
  end
end
