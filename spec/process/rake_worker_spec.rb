# frozen_string_literal: true

require "spec_helper"

RSpec.describe "rake tasker:worker" do
  def spawn_rake_worker
    env = { "DATABASE_URL" => TEST_DATABASE_URL, "RUBYLIB" => File.join(ROOT, "lib"),
            "TASKER_BOOT" => File.join(ROOT, "spec/support/boot.rb"), "TASKER_STOP_TIMEOUT" => "15" }
    Process.spawn(env, "rake", "-f", File.join(ROOT, "Rakefile"), "tasker:worker", "NAMESPACES=rakework",
                  "CONCURRENCY=1", out: File::NULL, err: ENV.fetch("TASKER_SPEC_LOG", File::NULL))
  end

  def runs_of(step)
    ActiveRecord::Base.connection.select_value(
      "SELECT count(*) FROM fleet_step_runs WHERE step_uuid = '#{step.step_uuid}'"
    ).to_i
  end

  it "finishes the step in flight when told to stop, then exits cleanly; the step runs exactly once" do
    orchestrator = spawn_orchestrator
    workers = [spawn_rake_worker]
    begin
      task = TaskerCore.create_task(namespace: "rakework", name: "slow", version: "1.0.0", context: { sleep: 2 })
      slow = task.step("slow")
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 60
      sleep 0.05 until runs_of(slow) == 1 || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
      expect(runs_of(slow)).to eq(1) # the handler is running now

      status = stop_process(workers.pop)
      expect(status&.exitstatus).to eq(0)
      slow.reload
      expect([slow.status, slow.attempts, slow.results]).to eq(["complete", 1, 1])

      # A new worker finishes the rest of the task.
      workers << spawn_rake_worker
      task.wait(timeout: 60)
      expect(task.status).to eq("complete")
      expect(runs_of(slow)).to eq(1)
      expect(history(slow.transitions).count { |_, to| to == "complete" }).to eq(1)
    ensure
      workers.each { |pid| stop_process(pid) }
      stop_process(orchestrator)
    end
  end

  it "is listed by rake -T with the orchestrator and status tasks" do
    listing = IO.popen(["rake", "-f", File.join(ROOT, "Rakefile"), "-T", "tasker"], &:read)
    expect(listing).to include("rake tasker:worker", "rake tasker:orchestrator", "rake tasker:status")
  end
end
