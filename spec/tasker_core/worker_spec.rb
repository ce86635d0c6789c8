# frozen_string_literal: true

require "spec_helper"

RSpec.describe TaskerCore::Worker do
  it "releases the GVL while waiting for work, so other Ruby threads run" do
    namespace = unique_name("gvl")
    native = TaskerCore::Native::Worker.start(TaskerCore.client, [namespace], 1)
    counter = 0
    counting = true
    counter_thread = Thread.new { counter += 1 while counting }
    sleep 0.05
    before = counter
    expect(native.next_job(0.5)).to be_nil # waits the full 0.5 s: no work
    during = counter - before
    counting = false
    counter_thread.join
    native.shutdown(5)

    # With the GVL held for those 0.5 s the counter would not move at all.
    expect(during).to be > 10_000
  end

  it "keeps its thread when a step's outcome cannot be recorded, and logs which step" do
    jobs = [{ step_uuid: "step-a" }, { step_uuid: "step-b" }]
    native = double("native worker", running?: true, shutdown: nil)
    allow(native).to receive(:next_job) { jobs.shift || sleep(0.01) && nil }
    allow(TaskerCore::Native::Worker).to receive(:start).and_return(native)
    worker = described_class.new(namespaces: [unique_name("report")], concurrency: 1)
    allow(worker).to receive(:check_connection_pool!)
    allow(worker).to receive(:check_handlers!)
    attempted = Queue.new
    allow(worker).to receive(:perform) do |job|
      attempted << job[:step_uuid]
      raise TaskerCore::DatabaseError, "recording step outcomes: connection reset"
    end
    log = StringIO.new
    logger = TaskerCore.logger
    TaskerCore.logger = Logger.new(log)

    worker.start
    seen = Array.new(2) { Timeout.timeout(5) { attempted.pop } }
    worker.stop(timeout: 2)

    # The second job ran on the same single thread after the first failed.
    expect(seen).to eq(%w[step-a step-b])
    expect(log.string).to include("could not record step step-a: TaskerCore::DatabaseError: " \
                                  "recording step outcomes: connection reset")
  ensure
    TaskerCore.logger = logger if logger
  end

  it "stops cleanly and reports that it stopped" do
    worker = described_class.new(namespaces: [unique_name("stop")], concurrency: 2).start
    expect(worker.running?).to be(true)
    worker.stop(timeout: 5)
    expect(worker.running?).to be(false)
  end
end

RSpec.describe TaskerCore::Worker, "start-up checks" do
  it "refuses to start when a template names a handler class that does not exist" do
    worker = described_class.new(namespaces: %w[missing], concurrency: 1)
    expect { worker.start }.to raise_error(TaskerCore::TemplateError) { |e|
      expect(e.message).to eq(
        "worker for missing cannot start: template missing/missing_handler@1.0.0 step \"nowhere\": handler class " \
        "Probe::DoesNotExist cannot be found: uninitialized constant Probe::DoesNotExist"
      )
    }
    expect(worker.running?).to be(false)
  end

  it "refuses to start with more threads than ActiveRecord's pool has connections" do
    size = ActiveRecord::Base.connection_pool.size
    expect { described_class.new(namespaces: %w[probe], concurrency: size + 1).start }
      .to raise_error(TaskerCore::ConfigurationError,
                      "ActiveRecord's pool has #{size} connections but the worker runs #{size + 1} threads; " \
                      "raise pool: in config/database.yml (or lower the worker's concurrency)")
  end

  it "reports each step through ActiveSupport::Notifications" do
    events = []
    subscriber = ActiveSupport::Notifications.subscribe("perform_step.tasker_core") do |*, payload|
      events << payload.slice(:step_name, :namespace, :handler, :attempt, :outcome)
    end
    runtime = TaskerCore.start(orchestrator: true, worker: { namespaces: %w[probe], concurrency: 2 })
    begin
      TaskerCore.create_task(namespace: "probe", name: "inspect_models", version: "1.0.0").wait(timeout: 30)
    ensure
      runtime.stop(timeout: 10)
      ActiveSupport::Notifications.unsubscribe(subscriber)
    end
    expect(events).to eq([{ step_name: "inspect", namespace: "probe", handler: "Probe::InspectModels", attempt: 1,
                            outcome: "complete" }])
  end
end
