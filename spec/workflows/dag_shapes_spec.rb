# frozen_string_literal: true

require "spec_helper"

RSpec.describe "DAG shapes through Ruby handlers" do
  run_tasker_around_each(namespaces: %w[shapes], concurrency: 8)

  def run(name)
    TaskerCore.create_task(namespace: "shapes", name: name, version: "1.0.0").wait(timeout: 60)
  end

  it "runs a tree of 8 steps" do
    task = run("tree")

    expect(task.status).to eq("complete")
    expect(task.workflow_steps.to_h { |s| [s.name, [s.status, s.results, s.attempts]] }).to eq(
      "root" => ["complete", 1, 1], "left" => ["complete", 2, 1], "right" => ["complete", 2, 1],
      "left_left" => ["complete", 3, 1], "left_right" => ["complete", 3, 1],
      "right_left" => ["complete", 3, 1], "right_right" => ["complete", 3, 1],
      "left_left_leaf" => ["complete", 4, 1]
    )
  end

  it "runs tasks created together by create_tasks, each to its end, in the order given" do
    names = %w[tree fan tree fan tree]
    tasks = TaskerCore.create_tasks(names.map { |name| { namespace: "shapes", name: name, version: "1.0.0" } })

    expect(tasks.map(&:name)).to eq(names)
    finished = tasks.map { |task| task.wait(timeout: 60) }
    expect(finished.map(&:status).uniq).to eq(["complete"])
    expect(finished.map { |task| task.workflow_steps.count }).to eq([8, 102, 8, 102, 8])
    expect(finished.map { |task| task.workflow_steps.map(&:status).uniq }.uniq).to eq([["complete"]])
    expect(finished.map { |task| task.workflow_steps.max_by(&:position).results }.uniq.sort).to eq([4, 201])
  end

  it "fans out to 100 parallel steps and back in to one" do
    task = run("fan")

    steps = task.workflow_steps.to_a
    expect(task.status).to eq("complete")
    expect(steps.size).to eq(102)
    expect(steps.first.results).to eq(1)
    expect(steps[1..100].map { |s| [s.status, s.results, s.attempts] }.uniq).to eq([["complete", 2, 1]])
    expect([steps.last.name, steps.last.results]).to eq(["sink", 201])
    expect(steps.last.dependencies.count).to eq(100)
  end
end
