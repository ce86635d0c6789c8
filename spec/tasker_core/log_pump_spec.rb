# frozen_string_literal: true

require "spec_helper"
require "stringio"

RSpec.describe TaskerCore::LogPump do
  around do |example|
    original = TaskerCore.logger
    @output = StringIO.new
    TaskerCore.logger = Logger.new(@output, level: Logger::DEBUG)
    example.run
  ensure
    TaskerCore.logger = original
  end

  def logged
    described_class.flush
    @output.string
  end

  it "writes the Rust core's events to TaskerCore.logger with their level and ids" do
    runtime = TaskerCore.start(orchestrator: true, worker: { namespaces: %w[examples], concurrency: 2 })
    task = TaskerCore.create_task(namespace: "examples", name: "linear_workflow", version: "1.0.0",
                                  context: { n: 2 })
    task.wait(timeout: 30)
    worker_id = runtime.worker.id
    runtime.stop(timeout: 10)

    finished = logged.lines.grep(/task finished task_uuid=#{task.task_uuid}/)
    expect(finished.size).to eq(1)
    expect(finished.first).to start_with("I, ").and include(
      " INFO -- : [tasker_core::worker] task finished task_uuid=#{task.task_uuid} " \
      "correlation_id=#{task.correlation_id} namespace=examples status=complete worker=#{worker_id}\n"
    )
    expect(logged).to match(
      /INFO -- : \[tasker_core::worker\] worker started worker=\S+ namespaces=\["examples"\] concurrency=2/
    )
  end

  it "refuses a log filter it cannot parse, naming it" do
    expect { TaskerCore::Native::Log.install("tasker_core=loud[") }
      .to raise_error(TaskerCore::ConfigurationError, /invalid log filter "tasker_core=loud\["/)
  end
end
