# frozen_string_literal: true

require "spec_helper"
require "tasker_core/web"

RSpec.describe TaskerCore::Web::Helpers do
  subject(:helpers) { Class.new { include TaskerCore::Web::Helpers }.new }

  it "gives a state this version does not know a neutral class and shows its name" do
    expect(helpers.state_class("waiting_for_retry")).to eq("state-waiting_for_retry")
    expect(helpers.state_class("skipped")).to eq("state-skipped")
    expect(helpers.state_class("paused_by_decision")).to eq("state-unknown")
    expect(helpers.state_class("\"><script>")).to eq("state-unknown")
    expect(helpers.state_label("paused_by_decision")).to eq("paused by decision")
  end

  it "formats durations, numbers and JSON" do
    expect(helpers.duration_text(0.0123)).to eq("12 ms")
    expect(helpers.duration_text(12.34)).to eq("12.3 s")
    expect(helpers.duration_text(600)).to eq("10m 00s")
    expect(helpers.duration_text(3725)).to eq("1h 02m")
    expect(helpers.number(1_234_567)).to eq("1,234,567")
    expect(helpers.number(-1200)).to eq("-1,200")
    expect(helpers.json_text(nil)).to eq("null")
    expect(helpers.json_text({ "a" => [1] })).to eq(%({\n  "a": [\n    1\n  ]\n}))
    expect(helpers.anchor_for("ns/name@1.0.0")).to eq("ns-name-1-0-0")
  end
end
