# frozen_string_literal: true

require "spec_helper"
require_relative "../../support/web"
require_relative "../../fixtures/handlers/decision_handlers"

# Rack-level: the page of a task a decision point ran (decide/shipping),
# with a worker for decide in this process.
RSpec.describe "TaskerCore::Web task page of a decision", :web do
  run_tasker_around_each(namespaces: %w[decide])

  it "shows skipped steps with their own state in the DAG, the table, the legend and the history, with no action" do
    task = TaskerCore.create_task(namespace: "decide", name: "shipping", version: "1.0.0",
                                  context: { "choose" => ["ship_by_courier"] })
    expect(task.wait(timeout: 20).status).to eq("complete")

    html = page_html("/tasks/#{task.task_uuid}")

    expect(dag_nodes(html)).to eq([%w[validate complete], %w[choose_carrier complete], %w[ship_by_courier complete],
                                   %w[ship_by_post skipped], %w[post_label skipped], %w[notify complete]])
    rows = html.scan(/<tr data-step="(\w+)">.*?<span class="badge state-(\w+)">/m)
    expect(rows).to eq([%w[validate complete], %w[choose_carrier complete], %w[ship_by_courier complete],
                        %w[ship_by_post skipped], %w[post_label skipped], %w[notify complete]])
    expect(html).to include('<span class="key state-skipped"></span>skipped')
    post = html[%r{<section class="step state-skipped" id="step-ship_by_post".*?</section>}m]
    expect(post).to include("pending → <span class=\"badge state-skipped\">skipped</span>",
                            "&quot;reason&quot;:&quot;not_chosen&quot;")
    expect(post).not_to include("Retry ship_by_post")
    expect(post).not_to include("Resolve ship_by_post manually")
  end
end
