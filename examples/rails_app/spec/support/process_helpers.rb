# frozen_string_literal: true

require "fileutils"
require "open3"
require "tmpdir"

# Runs the app's commands (rake, bin/rails, rspec) as processes of their
# own, as an operator would.
module ProcessHelpers
  # The database this run uses, for the processes it starts.
  def self.database_url
    @database_url ||= TaskerCore.client.database_url
  end

  def app_env(extra = {})
    { "RAILS_ENV" => "test", "DATABASE_URL" => ProcessHelpers.database_url,
      "RUBYLIB" => File.expand_path("../../../../lib", __dir__) }.merge(extra)
  end

  # Runs a command to completion in `dir`; returns [output, status].
  def run_command(env, *command, dir: APP_ROOT)
    output, status = Open3.capture2e(app_env(env), *command, chdir: dir)
    [output, status]
  end

  # A copy of the app in a temporary folder, for commands that write files.
  def scratch_copy_of_app
    dir = Dir.mktmpdir("shop_app")
    FileUtils.cp_r(Dir.glob(File.join(APP_ROOT, "*"), File::FNM_DOTMATCH).reject { |f| f.end_with?("/.", "/..") },
                   dir)
    FileUtils.rm_rf(Dir[File.join(dir, "{log,tmp}/*")])
    dir
  end

  # SIGTERM, then the exit status (nil if it had to be killed).
  def stop_process(pid, timeout: 30)
    Process.kill("TERM", pid)
    deadline = monotonic + timeout
    loop do
      _, status = Process.wait2(pid, Process::WNOHANG)
      return status if status

      if monotonic > deadline
        Process.kill("KILL", pid)
        Process.wait(pid)
        return nil
      end
      sleep 0.05
    end
  rescue Errno::ESRCH, Errno::ECHILD
    nil
  end

  def wait_until(timeout: 30, what: "the condition")
    deadline = monotonic + timeout
    sleep 0.05 until yield || monotonic > deadline
    raise "timed out after #{timeout} s waiting for #{what}" unless yield
  end

  def monotonic
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end
end
