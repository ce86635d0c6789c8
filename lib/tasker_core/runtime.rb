# frozen_string_literal: true

module TaskerCore
  # An orchestrator and/or a worker running in this process.
  class Runtime
    attr_reader :worker

    def initialize(orchestrator:, worker:, client: TaskerCore.client)
      @client = client
      @want_orchestrator = orchestrator
      @worker_options = worker
    end

    def start
      @orchestrator = Native::Orchestrator.start(@client) if @want_orchestrator
      if @worker_options
        options = @worker_options.transform_keys(&:to_sym)
        @worker = Worker.new(namespaces: options.fetch(:namespaces), concurrency: options.fetch(:concurrency, 4),
                             client: @client).start
      end
      self
    end

    def running?
      (@orchestrator.nil? || @orchestrator.running?) && (@worker.nil? || @worker.running?)
    end

    # The worker first (in-flight steps finish, the rest are released), then
    # the orchestrator.
    def stop(timeout: 10)
      @worker&.stop(timeout: timeout)
      @orchestrator&.shutdown(timeout.to_f)
      @worker = nil
      @orchestrator = nil
      LogPump.flush
    end
  end
end
