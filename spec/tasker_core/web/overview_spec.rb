# frozen_string_literal: true

require "spec_helper"
require_relative "../../support/web"
require_relative "../../support/limit_waits"
require_relative "../../fixtures/handlers/decision_handlers"

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

  # A namespace of this example's own (the page filtered to it): steps
  # waiting for a rate limit's token, steps and tasks waiting for a
  # concurrency slot, steps a decision skipped.
  context "with limits and a decision in a namespace of its own" do
    include_context "limit waits"
    let(:namespace) { unique_name("weblimits") }

    before do
      TaskerCore.client.register_template_yaml(<<~YAML, "web_decide.yaml")
        namespace: #{namespace}
        name: shipping
        version: 1.0.0
        steps:
          - { name: choose_carrier, decision: true, handler: { callable: Decisions::ChooseFromContext } }
          - { name: ship_by_courier, dependencies: [choose_carrier], handler: { callable: Decisions::Record } }
          - { name: ship_by_post, dependencies: [choose_carrier], handler: { callable: Decisions::Record } }
          - { name: post_label, dependencies: [ship_by_post], handler: { callable: Decisions::Record } }
      YAML
      @runtime = TaskerCore.start(orchestrator: true, worker: { namespaces: [namespace], concurrency: 4 })
    end

    it "shows the steps waiting for a token, the steps and tasks waiting for a slot, and the skipped steps" do
      shipped = create("shipping", 1, "choose" => ["ship_by_courier"]).first
      expect(shipped.wait(timeout: 20).status).to eq("complete")
      rated = create("rated", 4, "merchant" => key)
      charges = create("step_slot", 3, "customer" => key, "hold" => true)
      opened = create("task_slot", 3, "customer" => key, "hold" => true)
      @tasks = rated + charges + opened
      eventually(what: "the first of each to run") do
        [step_of(rated.first, "pay").status, step_of(charges.first, "charge").status,
         step_of(opened.first, "open").status] == %w[waiting_for_retry in_progress in_progress]
      end

      html = page_html("/?namespace=#{namespace}")

      # The decision skipped ship_by_post and post_label; the first payment
      # failed an attempt (its retry is in an hour).
      expect(html[%r{<p class="muted" id="steps-last-hour">.*?</p>}m].gsub(/<[^>]+>/, "")).to eq(
        "In the last hour: 2 steps completed, 1 attempt failed, 2 steps skipped."
      )
      expect(html.scan(/(\d+) completed, (\d+) failed, (\d+) skipped/).map { |m| m.map(&:to_i) }.transpose.map(&:sum))
        .to eq([2, 1, 2])

      # Three payments wait for their token, 100 s apart, in that order.
      expect(html).to include('<span class="count">3</span> steps wait for their rate limit')
      rows = html[%r{<table class="grid" id="rate-limited">.*?</table>}m].scan(%r{<tr data-step="([^"]+)">(.*?)</tr>}m)
      expect(rows.map(&:first)).to eq(rated.drop(1).map { |t| step_of(t, "pay").step_uuid })
      bucket = "rate:#{namespace}/rated/pay=#{key}"
      rated.drop(1).zip(rows) do |task, (_, row)|
        wait = step_of(task, "pay").transitions.reverse.find { |t| t.metadata["waiting_for"] == "rate_limit" }
        cells = row.scan(%r{<td>(.*?)</td>}m).flatten.map { |c| c.gsub(/<[^>]+>/, "").strip }
        expect(cells).to eq(["pay", "#{namespace}/rated", bucket,
                             "#{Time.iso8601(wait.metadata['until']).utc.strftime('%H:%M:%S')} UTC"])
      end

      # Two charges and two tasks wait for their key's one slot, beside
      # the limits' table.
      waits = html[%r{<p class="muted" id="slot-waits">.*?</p>}m].gsub(/<[^>]+>/, "")
      expect(waits).to eq("2 steps (ready, pending) and 2 tasks (not started) wait for a concurrency slot.")
      waiters = html[%r{<table class="grid" id="slot-waiters">.*?</table>}m]
      expect(waiters.scan(/<tr data-waiter="(\w+)">/).flatten.tally).to eq("step" => 2, "task" => 2)
      expect(waiters).to include("step:#{namespace}/step_slot/charge=#{key}", "task:#{namespace}/task_slot=#{key}",
                                 "#{namespace}/step_slot · charge", "#{namespace}/task_slot")
      limits = html[%r{<table class="grid" id="limits">.*?</table>}m]
      expect(limits.scan(/<tr data-slot="([^"]+)">/).flatten).to eq(
        ["step:#{namespace}/step_slot/charge=#{key}", "task:#{namespace}/task_slot=#{key}"]
      )
      expect(html.index('id="limits"')).to be < html.index('id="slot-waiters"')

      # Once they ran, nothing waits for a slot and the section says so.
      Limits::Tally.open!(key)
      (charges + opened).each { |task| expect(task.wait(timeout: 30).status).to eq("complete") }
      html = page_html("/?namespace=#{namespace}")
      expect(html).not_to include('id="slot-waiters"')
      expect(html).to include('<span class="count">3</span> steps wait for their rate limit')
    end
  end
end
