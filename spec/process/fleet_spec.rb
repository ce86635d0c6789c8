# frozen_string_literal: true

require "spec_helper"

# Whole processes, as they run in production: tasker-orchestrator binaries
# and Ruby worker processes sharing one database. Handlers count their runs
# in fleet_step_runs, outside the engine.
RSpec.describe "many processes on one database" do
  let(:expected) do
    {
      "linear" => { "a" => 1, "b" => 2, "c" => 3, "d" => 4 },
      "diamond" => { "a" => 1, "b" => 2, "c" => 2, "d" => 5 },
      "mixed" => { "a" => 1, "b" => 2, "c" => 2, "d" => 5, "e" => 3, "f" => 9, "g" => 2 }
    }
  end

  def runs_by_step(tasks)
    ActiveRecord::Base.connection.select_rows(
      "SELECT step_uuid, count(*) FROM fleet_step_runs WHERE task_uuid = ANY($1::uuid[]) GROUP BY step_uuid",
      "runs", [ActiveRecord::Relation::QueryAttribute.new("tasks", "{#{tasks.map(&:task_uuid).join(',')}}",
                                                          ActiveRecord::Type::String.new)]
    ).to_h.transform_values { |count| Integer(count) }
  end

  it "runs 200 tasks with 2 orchestrators and 3 workers; every step's handler runs exactly once" do
    pids = Array.new(2) { spawn_orchestrator }
    pids += Array.new(3) { spawn_worker(namespaces: %w[fleet], concurrency: 4) }
    begin
      shapes = expected.keys
      tasks = Array.new(200) do |i|
        TaskerCore.create_task(namespace: "fleet", name: shapes[i % 3], version: "1.0.0", context: { i: i })
      end
      tasks.each { |task| task.wait(timeout: 120) }

      expect(tasks.map(&:status).tally).to eq("complete" => 200)
      tasks.each do |task|
        expect(task.workflow_steps.to_h { |s| [s.name, s.results] }).to eq(expected.fetch(task.name))
      end
      steps = tasks.flat_map(&:workflow_steps)
      expect(steps.size).to eq(67 * 4 + 67 * 4 + 66 * 7)
      runs = runs_by_step(tasks)
      expect(runs.keys.sort).to eq(steps.map(&:step_uuid).sort)
      expect(runs.values.uniq).to eq([1])
      expect(steps.map(&:attempts).uniq).to eq([1])
    ensure
      statuses = pids.map { |pid| stop_process(pid) }
    end
    expect(statuses.map { |s| s&.exitstatus }).to eq([0] * 5)
  end

  it "finishes a task whose worker was killed with SIGKILL mid-step, recording the result once" do
    env = { "TASKER_VISIBILITY_TIMEOUT_SECONDS" => "2" }
    orchestrator = spawn_orchestrator(env: env)
    doomed = spawn_worker(namespaces: %w[fleet], concurrency: 1, env: env)
    survivor = nil
    begin
      task = TaskerCore.create_task(namespace: "fleet", name: "slow", version: "1.0.0", context: { sleep: 3 })
      slow = task.step("slow")
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 20
      now = -> { Process.clock_gettime(Process::CLOCK_MONOTONIC) }
      sleep 0.05 until runs_by_step([task])[slow.step_uuid] || now.call > deadline
      expect(runs_by_step([task])[slow.step_uuid]).to eq(1)

      Process.kill("KILL", doomed)
      Process.wait(doomed)
      survivor = spawn_worker(namespaces: %w[fleet], concurrency: 1, env: env)
      task.wait(timeout: 60)

      expect(task.status).to eq("complete")
      slow.reload
      expect([slow.status, slow.attempts, slow.results]).to eq(["complete", 2, 1])
      expect(task.step("after").results).to eq(2)
      expect(history(slow.transitions)).to eq([["", "pending"], %w[pending enqueued], %w[enqueued in_progress],
                                               %w[in_progress enqueued], %w[enqueued in_progress],
                                               %w[in_progress complete]])
      # The killed attempt ran the handler too (at-least-once), but only one
      # result was ever recorded.
      expect(runs_by_step([task])[slow.step_uuid]).to eq(2)
    ensure
      [doomed, survivor, orchestrator].compact.each { |pid| stop_process(pid) }
    end
  end
end
