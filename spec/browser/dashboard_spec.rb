# frozen_string_literal: true

require "spec_helper"
require_relative "../support/browser"

# The dashboard in headless Chromium, as an operator uses it. bin/test runs
# these in the PGMQ pass (the pages are the same under RabbitMQ; the
# rack-level specs run under both). Screenshots go to target/screenshots/.
RSpec.describe "The dashboard in a browser", :browser, :web do
  context "with a worker and an orchestrator running" do
    run_tasker_around_each(namespaces: %w[webui])

    it "finds a failed task from the overview, shows the red step and its backtrace, and retries it live" do
      task = failed_diamond(note: "card declined")
      create_diamond({ "note" => "fine" }).wait(timeout: 15)

      visit "/?namespace=webui"
      expect(find('[data-count="error"] .count').text).to eq("1")
      expect(find('[data-count="complete"] .count').text).to eq("1")
      screenshot("overview")
      within("#recent-failures") { click_link "webui/diamond_order" }

      expect(page).to have_current_path("/tasks/#{task.task_uuid}")
      expect(find("#task-status").text).to eq("error")
      expect(node_state("right")).to eq("error")
      expect(find('svg.dag g.node[data-step="right"] rect').native.css_value("fill")).to eq("rgb(214, 69, 69)")
      within("#step-right") do
        expect(find(".error-class").text).to eq("TaskerCore::PermanentError")
        expect(find(".error-message").text).to eq("right failed: card declined")
        expect(find(".backtrace pre").text).to include("web_handlers.rb")
      end
      screenshot("task_failed")

      WebFixtures.heal(task.task_uuid)
      accept_confirm("Retry right with fresh attempts?") { click_button "Retry right" }

      expect(page).to have_css("#task-status", text: "complete", wait: 15)
      expect(page).to have_css('svg.dag g.node[data-step="right"][data-state="complete"]')
      expect(page).to have_css('svg.dag g.node[data-step="finish"][data-state="complete"]')
      expect(page).to have_text("Step retried: it runs again with fresh attempts.")
      expect(task.reload.status).to eq("complete")
      screenshot("task")
    end

    it "cancels a running task" do
      task = held_diamond

      visit "/tasks/#{task.task_uuid}"
      expect(find("#task-status").text).to eq("in progress")
      expect(node_state("left")).to eq("in_progress")
      accept_confirm { click_button "Cancel task" }

      expect(page).to have_css("#task-status", text: "cancelled")
      expect(page).to have_text("Task cancelled.")
      expect(node_state("finish")).to eq("cancelled")
      expect(page).to have_no_button("Cancel task")
      expect(task.reload.status).to eq("cancelled")
    end

    it "resolves a failed step by hand with a JSON result" do
      task = failed_diamond

      visit "/tasks/#{task.task_uuid}"
      within("#step-right") { fill_in "result", with: '{"charged": 42}' }
      accept_confirm { within("#step-right") { click_button "Resolve right manually" } }

      expect(page).to have_css("#task-status", text: "complete", wait: 15)
      expect(node_state("right")).to eq("resolved_manually")
      expect(find("#step-right .result").text).to eq(%({\n  "charged": 42\n}))
      expect(task.reload.status).to eq("complete")
    end

    it "runs none of the script a context, a result or an error message carries" do
      task = failed_diamond(note: %(<script>window.__xss=1</script>"><img src=x onerror="window.__xss=2">))

      visit "/tasks/#{task.task_uuid}"
      expect(find("#step-right .error-message").text)
        .to eq(%(right failed: <script>window.__xss=1</script>"><img src=x onerror="window.__xss=2">))
      expect(page).to have_no_css("img")
      expect(page.evaluate_script("window.__xss")).to be_nil
      expect(find("#step-left .result").text).to include('"note": "<script>window.__xss=1</script>')
    end
  end

  context "with nothing running" do
    it "shows the templates with their DAGs" do
      visit "/templates"
      within('[data-template="webui/diamond_order@1.0.0"]') do
        expect(all("svg.dag g.node").map { |n| n["data-step"] }).to eq(%w[start left right finish])
      end
      screenshot("templates")
    end

    it "lists tasks and follows one" do
      task = create_parked({ "n" => 1 })
      visit "/tasks?namespace=webdlq"
      expect(all("#task-list tbody tr").size).to eq(1)
      screenshot("tasks")
      click_link "webdlq/parked"
      expect(page).to have_current_path("/tasks/#{task.task_uuid}")
    end

    if SPEC_PROVIDER == :pgmq
      it "replays a dead letter" do
        dead_letter(webdlq_queue, { "order" => 7 })

        visit "/dead_letters"
        within(%([data-queue="#{webdlq_queue}"])) do
          expect(find(".count").text).to eq("1")
          expect(page).to have_text("not a step message: missing task_uuid, step_uuid, correlation_id")
        end
        screenshot("dead_letters")
        accept_confirm { within(%([data-queue="#{webdlq_queue}"])) { click_button "Replay" } }

        expect(page).to have_text("Message sent to its queue again.")
        expect(find(%([data-count-queue="#{webdlq_queue}"] td.num)).text).to eq("0")
        expect(page).to have_no_css(%([data-queue="#{webdlq_queue}"]))
        expect(archived_count(webdlq_queue)).to eq(0)
        expect(TaskerCore.message_service.stats(webdlq_queue)[:depth]).to eq(1)
      end
    end
  end
end
