# frozen_string_literal: true

require "spec_helper"
require_relative "../../support/web"

# Rack-level: one task's page and the operator actions, with an
# orchestrator and a worker for webui in this process.
RSpec.describe "TaskerCore::Web task page", :web do
  run_tasker_around_each(namespaces: %w[webui])

  it "draws the DAG with each step's state and shows the failure, its backtrace and the history" do
    task = failed_diamond(note: "card declined")

    html = page_html("/tasks/#{task.task_uuid}")

    expect(dag_nodes(html)).to eq([%w[start complete], %w[left complete], %w[right error], %w[finish pending]])
    edges = html.scan(/<path class="edge (edge-\w+)"/).flatten
    expect(edges.sort).to eq(%w[edge-blocked edge-done edge-done edge-done])
    expect(html).to include('id="task-status">error<')
    expect(html).to include('<dt>Priority</dt><dd><span id="task-priority">0</span>')
    right = html[%r{<section class="step state-error" id="step-right".*?</section>}m]
    expect(right).to include('<strong class="error-class">TaskerCore::PermanentError</strong>',
                             '<span class="error-message">right failed: card declined</span>', "web_handlers.rb:")
    expect(right).to include("Retry right", "Resolve right manually")
    # Claimed eagerly by the worker that finished start (no queue hop), or,
    # when the worker had no free slot at that moment, through the queue.
    history = right.scan(%r{<li><span class="when">[^<]*</span> (.*?) →.*?>([a-z ]+)</span>}m)
    expect(history).to eq([["(new)", "pending"], ["pending", "in progress"], ["in progress", "error"]])
      .or eq([["(new)", "pending"], %w[pending enqueued], ["enqueued", "in progress"], ["in progress", "error"]])
    expect(html[%r{<section class="step state-complete" id="step-left".*?</section>}m])
      .to include("&quot;step&quot;: &quot;left&quot;", "&quot;note&quot;: &quot;card declined&quot;")
    expect(html).not_to include("id=\"cancel-task\"")
  end

  it "shows the priority the task was created with" do
    task = TaskerCore.create_task(namespace: "webui", name: "diamond_order", version: "1.0.0",
                                  context: { "note" => "urgent" }, priority: 5)
    task.wait(timeout: 15)

    expect(page_html("/tasks/#{task.task_uuid}")).to include('<dt>Priority</dt><dd><span id="task-priority">5</span>')
  end

  it "retries a failed step: it runs again and the task completes" do
    task = failed_diamond
    WebFixtures.heal(task.task_uuid)

    post_with_token("/steps/#{step_of(task, 'right').step_uuid}/retry", from: "/tasks/#{task.task_uuid}")

    expect(last_response.status).to eq(303)
    expect(last_response.headers["location"]).to eq("/tasks/#{task.task_uuid}?notice=retried")
    expect(task.wait(timeout: 15).status).to eq("complete")
    right = step_of(task, "right")
    expect([right.status, right.attempts]).to eq(["complete", 1])
    expect(history(right.transitions)).to include(%w[error pending])
    html = page_html("/tasks/#{task.task_uuid}?notice=retried")
    expect(html).to include("Step retried: it runs again with fresh attempts.")
    expect(dag_nodes(html).map(&:last)).to eq(%w[complete complete complete complete])
  end

  it "resolves a step by hand with a JSON result, and refuses a result that is not JSON" do
    task = failed_diamond
    right = step_of(task, "right")

    post_with_token("/steps/#{right.step_uuid}/resolve", from: "/tasks/#{task.task_uuid}",
                                                         params: { "result" => "{not json" })
    expect(last_response.status).to eq(422)
    expect(last_response.body).to include("The result is not JSON")
    expect(right.reload.status).to eq("error")

    post_with_token("/steps/#{right.step_uuid}/resolve", from: "/tasks/#{task.task_uuid}",
                                                         params: { "result" => '{"charged": 42}' })
    expect(last_response.status).to eq(303)
    expect(task.wait(timeout: 15).status).to eq("complete")
    expect(right.reload.status).to eq("resolved_manually")
    expect(right.results).to eq("charged" => 42)
  end

  it "cancels a running task" do
    task = held_diamond
    expect(page_html("/tasks/#{task.task_uuid}")).to include('id="cancel-task"')

    post_with_token("/tasks/#{task.task_uuid}/cancel", from: "/tasks/#{task.task_uuid}")

    expect(last_response.headers["location"]).to eq("/tasks/#{task.task_uuid}?notice=cancelled")
    expect(task.reload.status).to eq("cancelled")
    html = page_html("/tasks/#{task.task_uuid}")
    expect(dag_nodes(html)).to eq([%w[start complete], %w[left cancelled], %w[right complete], %w[finish cancelled]])
    expect(html).not_to include('id="cancel-task"')
  end

  it "serves the live part alone, and 404 for a task that does not exist" do
    task = held_diamond

    get "/tasks/#{task.task_uuid}/live"
    expect(last_response.status).to eq(200)
    expect(last_response.body).to start_with("<div class=\"live-state\" data-finished=\"false\"")
    expect(last_response.body).not_to include("<html")
    expect(dag_nodes(last_response.body).assoc("left")).to eq(%w[left in_progress])

    get "/tasks/00000000-0000-7000-8000-000000000000"
    expect(last_response.status).to eq(404)
    expect(last_response.body).to include("No task 00000000-0000-7000-8000-000000000000.")
  end
end
