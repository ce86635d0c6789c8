# frozen_string_literal: true

module TaskerCore
  # Runs tasker_core as a process of its own (rake tasker:worker,
  # rake tasker:orchestrator): start, wait for SIGTERM or SIGINT, stop
  # gracefully (steps in flight finish; the rest are released), exit.
  module Launcher
    module_function

    def run(orchestrator:, worker:, stop_timeout: Integer(ENV.fetch("TASKER_STOP_TIMEOUT", "25")))
      TaskerCore.migrate!
      TaskerCore.register_templates!
      runtime = TaskerCore.start(orchestrator: orchestrator, worker: worker)
      ops = Operations.serve_from_env
      signals = Queue.new
      previous = %w[TERM INT].to_h { |sig| [sig, trap(sig) { signals << sig }] }
      TaskerCore.logger.info("tasker_core #{describe(orchestrator, worker)} started (pid #{::Process.pid})")
      signal = signals.pop
      TaskerCore.logger.info("tasker_core received SIG#{signal}; stopping (up to #{stop_timeout} s)")
      runtime.stop(timeout: stop_timeout)
      ops&.stop
      TaskerCore.logger.info("tasker_core stopped")
    ensure
      previous&.each { |sig, handler| trap(sig, handler || "DEFAULT") }
    end

    def describe(orchestrator, worker)
      parts = []
      parts << "orchestrator" if orchestrator
      parts << "worker for #{worker[:namespaces].join(', ')} (concurrency #{worker[:concurrency]})" if worker
      parts.join(" and ")
    end
  end
end
