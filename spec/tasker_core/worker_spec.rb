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

  it "stops cleanly and reports that it stopped" do
    worker = described_class.new(namespaces: [unique_name("stop")], concurrency: 2).start
    expect(worker.running?).to be(true)
    worker.stop(timeout: 5)
    expect(worker.running?).to be(false)
  end
end
