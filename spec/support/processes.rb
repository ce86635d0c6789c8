# frozen_string_literal: true

# Starts and stops whole tasker processes for the multi-process specs.
module ProcessHelpers
  ORCHESTRATOR_BIN = File.join(ROOT, "target/release/tasker-orchestrator")

  def spawn_worker(namespaces:, concurrency: 4, env: {})
    read, write = IO.pipe
    pid = Process.spawn({ "DATABASE_URL" => TEST_DATABASE_URL, "NAMESPACES" => namespaces.join(","),
                          "CONCURRENCY" => concurrency.to_s }.merge(env),
                        RbConfig.ruby, "-I", File.join(ROOT, "lib"), File.join(ROOT, "spec/support/tasker_process.rb"),
                        out: write, err: $stderr)
    write.close
    line = read.gets
    raise "worker process #{pid} did not start" unless line&.start_with?("ready")

    read.close
    pid
  end

  def spawn_orchestrator(env: {})
    unless File.executable?(ORCHESTRATOR_BIN)
      raise "#{ORCHESTRATOR_BIN} is not built: run bin/test (or cargo build --release --workspace)"
    end

    Process.spawn({ "DATABASE_URL" => TEST_DATABASE_URL, "TASKER_LOG" => "warn" }.merge(env), ORCHESTRATOR_BIN,
                  out: File::NULL, err: $stderr)
  end

  # SIGTERM, then the exit status (nil if it had to be killed, or had
  # already been reaped).
  def stop_process(pid, timeout: 20)
    begin
      Process.kill("TERM", pid)
    rescue Errno::ESRCH
      return nil
    end
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    loop do
      _, status = begin
        Process.wait2(pid, Process::WNOHANG)
      rescue Errno::ECHILD
        return nil
      end
      return status if status

      if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
        Process.kill("KILL", pid)
        Process.wait(pid)
        return nil
      end
      sleep 0.05
    end
  end
end
