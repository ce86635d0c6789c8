# frozen_string_literal: true

require "spec_helper"
require_relative "../fixtures/handlers/settings_handlers"

# A step's handler.initialization from the template reaches its handler,
# through a worker in this process (the test mode's specs check the same
# through TaskerCore::Testing).
RSpec.describe "handler settings (handler.initialization)" do
  run_tasker_around_each(namespaces: %w[settings], concurrency: 2)

  it "hands each step its own settings, frozen, through config or initialize(config)" do
    task = TaskerCore.create_task(namespace: "settings", name: "greetings", version: "1.0.0")
    expect(task.wait(timeout: 30).status).to eq("complete")
    expect(task.workflow_steps.map { |s| [s.name, s.status, s.results] }).to eq(
      [
        ["configured", "complete", "hej hej a,b"],
        ["own_initialize", "complete", "hej hej a,b!"],
        ["unconfigured", "complete", { "config" => {}, "frozen" => true }],
        ["plain_class", "complete", "HEJ HEJ A,B! (loud)"]
      ]
    )
  end

  it "refuses to change the settings a handler was given" do
    handler = TaskerCore::StepHandler::Resolver.build("Settings::Greeter", { "tags" => ["a"] })
    expect { handler.config["tags"] << "b" }.to raise_error(FrozenError)
    expect(handler.config).to eq({ "tags" => ["a"] })
  end
end
