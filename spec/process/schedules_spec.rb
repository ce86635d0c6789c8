# frozen_string_literal: true

require "spec_helper"

# Cron schedules fired by three tasker-orchestrator processes at once, with
# a downtime in between: every slot is fired once or skipped once, and only
# the slots inside the catch-up window are fired after the downtime. The
# schedule fires every second (six-field cron) so the spec takes seconds.
RSpec.describe "cron schedules with three orchestrators" do
  let(:catch_up) { 3 }
  let(:name) { unique_name("cron") }
  let(:env) { { "TASKER_SCHEDULES_CATCH_UP_SECONDS" => catch_up.to_s, "TASKER_SCHEDULES_POLL_INTERVAL_MS" => "100" } }

  def register(version, schedules)
    register_timing_template(name, version, schedules)
  end

  def slots
    rows = ActiveRecord::Base.connection.select_rows(<<~SQL)
      SELECT to_char(slot_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), task_uuid, skipped
        FROM tasker_schedule_slots WHERE namespace = 'timing' AND name = '#{name}' ORDER BY slot_at
    SQL
    rows.map { |at, task, skipped| [Time.iso8601(at), task, Integer(skipped)] }
  end

  def fired_count
    slots.count { |_, task, _| task }
  end

  def wait_until(timeout:)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    sleep 0.1 until yield || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
  end

  def consecutive?(times)
    times.each_cons(2).all? { |a, b| b - a == 1 }
  end

  it "fires each slot once, and after a downtime only the slots inside the catch-up window" do
    worker = TaskerCore.start(orchestrator: false, worker: { namespaces: %w[timing], concurrency: 4 })
    register("1.0.0", "schedules:\n  - { name: every_second, cron: '* * * * * *', context: { source: cron } }")
    orchestrators = []
    begin
      orchestrators = Array.new(3) { spawn_orchestrator(env: env) }
      wait_until(timeout: 20) { fired_count >= 4 }
      first_exits = orchestrators.map { |pid| stop_process(pid) }
      orchestrators = []
      expect(first_exits.map { |s| s&.exitstatus }).to eq([0, 0, 0])
      before_downtime = slots
      expect(before_downtime.map(&:last).uniq).to eq([0])

      sleep 6 # six slots with no orchestrator
      restarted_at = Time.now
      orchestrators = Array.new(3) { spawn_orchestrator(env: env) }
      wait_until(timeout: 20) { slots.count { |at, task, _| task && at >= restarted_at } >= 3 }

      schedule = TaskerCore.status["schedules"].find { |s| s["template"] == "timing/#{name}@1.0.0" }
      expect(schedule.slice("schedule", "cron", "time_zone")).to eq(
        "schedule" => "every_second", "cron" => "* * * * * *", "time_zone" => "UTC"
      )
      expect(Time.iso8601(schedule["next_fire_at"]) - Time.now).to be_between(-1, 1.5)
      expect(TaskerCore::OperatorReports.status).to include("timing/#{name}@1.0.0", "every_second")
    ensure
      # A newer version without schedules: nothing fires any more, here or in
      # any later orchestrator on this database.
      register("2.0.0", "")
      sleep 0.3
      exits = orchestrators.map { |pid| stop_process(pid) }
    end
    expect(exits.map { |s| s&.exitstatus }).to eq([0, 0, 0])

    rows = slots
    skipped = rows.reject { |_, task, _| task }
    expect(skipped.size).to eq(1)
    skipped_at, _, skipped_count = skipped.first
    fired = rows.select { |_, task, _| task }
    before, after = fired.partition { |at, _, _| at < skipped_at }.map { |part| part.map(&:first) }
    expect(before).to eq(before_downtime.map(&:first))
    expect(before.size).to be >= 4
    expect(consecutive?(before)).to be(true)
    expect(consecutive?(after)).to be(true)
    # Every slot of the downtime is either skipped (counted in the one row)
    # or, inside the catch-up window, fired: none twice, none lost.
    expect(skipped_at - before.last).to eq(skipped_count)
    expect(after.first - skipped_at).to eq(1)
    caught_up = after.count { |at| at < restarted_at }
    expect(caught_up).to be <= catch_up
    expect(skipped_count).to be >= 6 - catch_up - 1
    expect(rows.map(&:first).map(&:usec).uniq).to eq([0])

    # One task per fired slot, named by the slot, each run to completion.
    # (Slots caught up together are created in one transaction: one created_at.)
    tasks = TaskerCore::Models::Task.where(namespace: "timing", name: name).to_a.sort_by(&:identity_key)
    expect(tasks.map(&:task_uuid).sort).to eq(fired.map { |_, task, _| task }.sort)
    expect(tasks.map(&:identity_key)).to eq(
      fired.map { |at, _, _| "schedule:timing/#{name}:every_second@#{at.utc.strftime('%Y-%m-%dT%H:%M:%SZ')}" }
    )
    tasks.each { |task| task.wait(timeout: 30) }
    expect(tasks.map(&:status).uniq).to eq(["complete"])
    expect(tasks.map(&:context).uniq).to eq([{ "source" => "cron" }])
  ensure
    worker&.stop(timeout: 10)
  end

  it "refuses a bad schedule at registration, naming the template and the field" do
    expect do
      TaskerCore.client.register_template_yaml(<<~YAML, "bad_schedule.yaml")
        namespace: timing
        name: #{name}
        version: 1.0.0
        schedules:
          - { cron: "0 2 * * *", time_zone: Europe/Nowhere }
          - { cron: "every night" }
        steps:
          - { name: tick, handler: { callable: Probe::Nap } }
      YAML
    end.to raise_error(TaskerCore::TemplateError,
                       "template timing/#{name}@1.0.0: schedules[0].time_zone \"Europe/Nowhere\" is not a known " \
                       "time zone (like Europe/Berlin or UTC); schedules[1].cron \"every night\" is not a valid " \
                       "cron expression: it has 2 field(s); a cron expression has 5 (minute, hour, day of month, " \
                       "month, day of week) or 6 (seconds first)")
  end
end
