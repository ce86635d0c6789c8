# frozen_string_literal: true

require "spec_helper"
require_relative "../../support/web"

# Rack-level: the overview filtered to the specs' own namespace, so every
# count is exact. An orchestrator and a worker run in this process.
RSpec.describe "TaskerCore::Web overview", :web do
  context "with a worker and an orchestrator running" do
    run_tasker_around_each(namespaces: %w[webui])

    it "counts tasks by state, steps per minute, the queue, the live worker and the failures" do
      complete = create_diamond({ "note" => "fine" })
      complete.wait(timeout: 15)
      failed = failed_diamond(note: "card declined")
      held = held_diamond
      worker = worker_of(step_of(held, "left"))
      expect(worker).to be_a(String)

      html = page_html("/?namespace=webui")

      cards = html.scan(/data-count="(\w+)">\s*<span class="count">([\d,]+)</).to_h
      expect(cards).to eq("pending" => "0", "in_progress" => "1", "complete" => "1", "error" => "1", "cancelled" => "0")
      expect(html).to include('<span id="created-last-hour">3</span>')

      # complete: 4 steps; failed: start and left complete, right failed;
      # held: start and right complete (left runs).
      bars = html.scan(/(\d+) completed, (\d+) failed/).map { |c, f| [c.to_i, f.to_i] }
      expect(bars.size).to eq(60)
      expect(bars.sum(&:first)).to eq(8)
      expect(bars.sum(&:last)).to eq(1)

      # Nothing waits in the queue; held's running step may still hold its
      # message (in flight, not visible), depending on how it was claimed.
      depth = TaskerCore.message_service.stats(webui_queue)[:depth]
      expect(depth).to be <= 1
      row = html[%r{<tr data-queue="#{webui_queue}">.*?</tr>}m].gsub(/\s+/, " ")
      expect(row).to start_with(%(<tr data-queue="#{webui_queue}"> <td>#{webui_queue}</td> ) \
                                "<td class=\"num depth\">#{depth}</td> <td class=\"num\">0</td>")
      expect(html).not_to include(%(data-queue="#{webdlq_queue}"))

      expect(html.scan(/<div class="worker" data-worker="([^"]+)">/).flatten).to eq([worker])
      expect(html).to include("webui/diamond_order · left")

      failures = html[%r{<table class="grid" id="recent-failures">.*?</table>}m]
      expect(failures[%r{<tbody>.*</tbody>}m].scan("<tr>").size).to eq(1)
      expect(failures).to include(failed.task_uuid, ">right<", "TaskerCore::PermanentError",
                                  "right failed: card declined")
      expect(html).to include("Nothing is stuck and nothing waits for a retry.")
    end
  end

  it "shows every namespace's queue and the orchestration queue without a filter" do
    html = page_html("/")

    queues = html.scan(/<tr data-queue="([^"]+)">/).flatten
    expect(queues).to include(webui_queue, webdlq_queue, TaskerCore.task_requests_queue)
    expect(html).to include("<option>webui</option>", "<option>webdlq</option>")
  end

  # No orchestrator runs here, so nothing sweeps the steps this example
  # puts in place by hand (the states a crash or a retry would leave).
  context "with nothing running" do
    def fabricate(task, sql)
      ActiveRecord::Base.connection.execute(
        "UPDATE tasker_workflow_steps SET #{sql} WHERE task_uuid = '#{task.task_uuid}' AND name = 'only'"
      )
    end

    it "lists steps that stopped beating, waited too long in the queue, or wait for a retry" do
      fabricate(create_parked, "status = 'in_progress', attempts = 1, started_at = now() - interval '15 minutes', " \
                               "heartbeat_at = now() - interval '10 minutes'")
      fabricate(create_parked, "enqueued_at = now() - interval '1 hour'")
      fabricate(create_parked, "status = 'waiting_for_retry', attempts = 1, retry_at = now() + interval '1 hour', " \
                               "last_error = '{\"class\": \"X\", \"message\": \"warehouse busy\"}'")

      html = page_html("/?namespace=webdlq")

      rows = html[%r{<table class="grid" id="stuck">.*?</table>}m].scan(%r{<tr><td>.*?</tr>}m)
      expect(rows.size).to eq(3)
      expect(rows[0]).to include("webdlq/parked · only", "in progress", "no heartbeat for 10m 0", "worker unknown")
      expect(rows[1]).to include("enqueued", "enqueued 1h 00m ago, longer than 600 s")
      expect(rows[2]).to include("waiting for retry", "attempt 1 of 3 failed: warehouse busy")
      expect(html).to include("No step is running")
      cards = html.scan(/data-count="(\w+)">\s*<span class="count">([\d,]+)</).to_h
      expect(cards).to eq("pending" => "0", "in_progress" => "3", "complete" => "0", "error" => "0", "cancelled" => "0")
    end
  end

  context "with a cron schedule registered" do
    let(:name) { unique_name("nightly") }

    def register(version, schedules)
      register_timing_template(name, version, schedules)
    end

    it "lists each schedule with its next fire time, only under its namespace" do
      register("1.0.0", "schedules:\n  - { cron: '0 2 * * *', time_zone: Europe/Berlin }")
      now = Time.now.utc
      html = page_html("/?namespace=timing")
      row = html[%r{<tr data-schedule="timing/#{name}@1.0.0:0">.*?</tr>}m].gsub(/\s+/, " ")
      next_fire = TaskerCore.schedules.find { |s| s["template"] == "timing/#{name}@1.0.0" }["next_fire_at"]
      expect(Time.iso8601(next_fire)).to be_between(now, now + 86_400)
      expect(Time.iso8601(next_fire).in_time_zone("Europe/Berlin").strftime("%H:%M:%S")).to eq("02:00:00")
      expect(row).to eq(%(<tr data-schedule="timing/#{name}@1.0.0:0"> <td>timing/#{name}@1.0.0</td><td>0</td>) +
                        %(<td><code>0 2 * * *</code></td> <td>Europe/Berlin</td><td>-</td><td>#{next_fire}</td> </tr>))
      expect(page_html("/?namespace=webui")).not_to include(%(data-schedule="timing/#{name}))
    ensure
      register("2.0.0", "") # no schedule runs once this spec is done
    end
  end
end
