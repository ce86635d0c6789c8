# frozen_string_literal: true

require "spec_helper"
require_relative "../fixtures/handlers/fan_out_handlers"
require_relative "../support/web"

# Dynamic fan-out (spec/fixtures/templates/fan_out.yaml): `split` returns
# the context's items; its outcome makes one child `split[i]` per item,
# each doubling its element; `summarize` (the join) adds them up.
RSpec.describe "dynamic fan-out" do
  run_tasker_around_each(namespaces: %w[fanning], concurrency: 8)

  def run(context)
    TaskerCore.create_task(namespace: "fanning", name: "sum_doubles", version: "1.0.0", context: context)
              .wait(timeout: 120)
  end

  def children_of(task)
    task.workflow_steps.select(&:fan_out_child?)
  end

  # Each child's history, by step uuid, in one query.
  def histories(steps)
    TaskerCore::Models::WorkflowStepTransition.where(step_uuid: steps.map(&:step_uuid)).order(:step_uuid, :sort_key)
                                              .group_by(&:step_uuid)
  end

  queued = [["", "pending"], %w[pending enqueued], %w[enqueued in_progress], %w[in_progress complete]].freeze
  eager = [["", "pending"], %w[pending in_progress], %w[in_progress complete]].freeze
  let(:child_histories) { [eager, queued] }

  it "makes one child per item of 1,000, each getting its element, and the join sums them exactly" do
    items = (1..1000).to_a
    task = run("items" => items)

    expect(task.status).to eq("complete")
    steps = task.workflow_steps.to_a
    expect(steps.size).to eq(1002)
    expect([steps.first.name, steps.first.results]).to eq(["split", { "items" => items }])
    expect([steps.last.name, steps.last.status, steps.last.results]).to eq(
      ["summarize", "complete", { "sum" => 1_001_000, "count" => 1000, "first" => [2, 4, 6] }]
    )
    children = children_of(task)
    expect(children.map(&:name)).to eq((0...1000).map { |i| "split[#{i}]" })
    expect(children.map { |c| [c.status, c.fan_out_index, c.input, c.results, c.attempts] })
      .to eq(items.each_with_index.map { |item, i| ["complete", i, item, item * 2, 1] })
    expect(steps.last.dependencies.count).to eq(1001)
    expect(TaskerCore::Models::WorkflowStepEdge.where(task_uuid: task.task_uuid).count).to eq(1 + 2000)

    by_step = histories(children)
    children.each do |child|
      history = by_step.fetch(child.step_uuid)
      expect(child_histories).to include(history(history))
      expect(history.first.metadata).to eq("fan_out_of" => "split", "index" => child.fan_out_index)
    end
    expect(history(task.step("split").transitions).last).to eq(%w[in_progress complete])
    expect(history(task.transitions)).to eq([["", "pending"], %w[pending in_progress], %w[in_progress complete]])
  end

  it "runs the join at once when the array is empty" do
    task = run("items" => [])

    expect(task.status).to eq("complete")
    expect(task.workflow_steps.map { |s| [s.name, s.status, s.results] }).to eq(
      [["split", "complete", { "items" => [] }],
       ["summarize", "complete", { "sum" => 0, "count" => 0, "first" => [] }]]
    )
  end

  it "blocks the join when a child fails for good; the other children finish and the task ends in error" do
    task = run("items" => (1..20).to_a, "fail_at" => 7)

    expect(task.status).to eq("error")
    expect(task.transitions.last.metadata).to eq("failed_steps" => ["split[7]"])
    children = children_of(task)
    expect(children.map { |c| [c.name, c.status] }).to eq(
      (0...20).map { |i| ["split[#{i}]", i == 7 ? "error" : "complete"] }
    )
    failed = task.step("split[7]")
    expect([failed.attempts, failed.last_error["class"], failed.last_error["message"]]).to eq(
      [1, "TaskerCore::PermanentError", "item 8 refused"]
    )
    expect(history(failed.transitions).last).to eq(%w[in_progress error])
    expect([task.step("summarize").status, task.step("summarize").attempts]).to eq(["pending", 0])
  end

  it "retries a child that fails retryably once; it then succeeds and the join sums everything" do
    task = run("items" => (1..10).to_a, "flaky_at" => 3)

    expect(task.status).to eq("complete")
    flaky = task.step("split[3]")
    expect([flaky.status, flaky.attempts, flaky.results]).to eq(["complete", 2, 8])
    expect(history(flaky.transitions)).to include(%w[in_progress waiting_for_retry])
    expect(history(flaky.transitions).last).to eq(%w[in_progress complete])
    expect(children_of(task).reject { |c| c.name == "split[3]" }.map(&:attempts).uniq).to eq([1])
    expect(task.step("summarize").results).to eq("sum" => 110, "count" => 10, "first" => [2, 4, 6])
  end

  it "ends the fan-out step in error, naming it and the key, when its result has no array there" do
    [[{ "things" => [1] }, 'has no key "items"'], [{ "items" => "many" }, 'has a string at key "items", not an array'],
     [[1, 2], 'is an array, not an object with key "items"']].each do |result, problem|
      task = run("split_result" => result)

      expect(task.status).to eq("error")
      expect(task.workflow_steps.map { |s| [s.name, s.status] }).to eq([%w[split error], %w[summarize pending]])
      split = task.step("split")
      expect([split.attempts, split.results, split.last_error["class"]]).to eq([1, nil, "TaskerCore::FanOutError"])
      expect(split.last_error["message"]).to eq(
        "step \"split\" of fanning/sum_doubles@1.0.0 fans out from \"items\", but its result #{problem}"
      )
      expect(history(split.transitions).last).to eq(%w[in_progress error])
      expect(split.transitions.last.metadata["error_class"]).to eq("TaskerCore::FanOutError")
      expect(task.transitions.last.metadata).to eq("failed_steps" => ["split"])
    end
  end

  it "shows the first 50 children on the dashboard's task page, every one not complete, and how many more", :web do
    task = run("items" => (1..80).to_a, "fail_at" => 70)
    expect(task.status).to eq("error")

    html = page_html("/tasks/#{task.task_uuid}")

    shown = ["split", *(0...50).map { |i| "split[#{i}]" }, "split[70]", "summarize"]
    expect(dag_nodes(html).map(&:first)).to match_array(shown)
    expect(dag_nodes(html).assoc("split[70]")).to eq(%w[split[70] error])
    expect(html.scan(/<tr data-step="([^"]+)">/).flatten).to eq(shown)
    expect(html).to include('<p class="muted" id="hidden-steps">29 more steps (fan-out children) are not shown.</p>')
    join = html[%r{<section class="step state-pending" id="step-summarize".*?</section>}m]
    expect(join).to include("<dt>Depends on</dt><dd>split, split[0], split[1], ")
    expect(join).to include("split[49], split[70], 29 more not shown</dd>")
  end

  it "refuses a template whose fan_out is incomplete or whose join does not wait for it, naming the step" do
    yaml = lambda do |fan_out, join_deps|
      <<~YAML
        namespace: fanning
        name: #{unique_name('bad')}
        version: 1.0.0
        steps:
          - { name: split, handler: { callable: Fanning::Split }, fan_out: #{fan_out} }
          - { name: other, handler: { callable: Fanning::Split } }
          - { name: summarize, dependencies: #{join_deps}, handler: { callable: Fanning::Summarize } }
      YAML
    end
    register = ->(text) { TaskerCore.client.register_template_yaml(text, "bad.yaml") }
    expect { register.call(yaml.call("{ handler: { callable: Fanning::Double }, join: summarize }", "[split]")) }
      .to raise_error(TaskerCore::TemplateError, /step "split" has fan_out without from/)
    complete = "{ from: items, handler: { callable: Fanning::Double }, join: summarize }"
    expect { register.call(yaml.call(complete, "[other]")) }
      .to raise_error(TaskerCore::TemplateError,
                      /step "split" has fan_out with join "summarize", which does not depend on "split"/)
  end
end
