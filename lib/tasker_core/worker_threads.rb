# frozen_string_literal: true

module TaskerCore
  # The worker's threads: `size` of them run the block until the worker
  # stops. One that a handler ended (Thread#kill, exit in a thread) is
  # replaced at once, its step's outcome having been recorded on the way
  # out, so the worker never loses concurrency.
  class WorkerThreads
    def initialize(size, &body)
      @body = body
      @lock = Mutex.new
      @stopping = false
      @replaced = 0
      @threads = Array.new(size) { |i| spawn(i) }
    end

    def alive
      @lock.synchronize { @threads.count(&:alive?) }
    end

    # How many threads were replaced.
    def replaced
      @lock.synchronize { @replaced }
    end

    # From now on a thread that ends is not replaced.
    def stop_replacing
      @lock.synchronize { @stopping = true }
    end

    # Waits for each thread until `deadline` (a monotonic time) without
    # re-raising what ended it: stopping must stop.
    def join(deadline)
      stop_replacing
      threads = @lock.synchronize { @threads.dup }
      threads.each do |thread|
        thread.join([deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC), 0].max)
      rescue Exception => e # rubocop:disable Lint/RescueException
        TaskerCore.logger.error("tasker worker thread #{thread.name} had ended with #{e.class}")
      end
    end

    private

    def spawn(index)
      Thread.new do
        Thread.current.name = "tasker-worker-#{index}"
        Thread.current.report_on_exception = false
        @body.call
      ensure
        replace(index)
      end
    end

    def replace(index)
      replaced = @lock.synchronize do
        next false if @stopping

        @replaced += 1
        @threads[index] = spawn(index)
      end
      return unless replaced

      TaskerCore.logger.error("tasker worker thread tasker-worker-#{index} was ended by its handler; " \
                              "a new thread took its place")
    end
  end
end
