# frozen_string_literal: true

# Stopping a process a spec started, as an operator would: SIGTERM, then
# SIGKILL after `timeout`. Shared by the gem's specs and the Rails example
# app's (examples/rails_app/spec).
module StopProcess
  # The exit status, or nil if it had to be killed or was already reaped.
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
