# frozen_string_literal: true

# The dashboard's render time with a million tasks in the database (issue
# 16: the task list and the overview under 200 ms). Fills a database of its
# own with set-based SQL (INSERT ... SELECT generate_series, not the API),
# then times whole requests through the Rack app (routing, queries, ERB):
#   bin/bench web_dashboard      # or: ruby -Ilib bench/web_dashboard.rb
# BENCH_WEB_TASKS (1,000,000) tasks of the linear4 template, created evenly
# over the last 30 days with UUIDv7 keys of their creation time; 4 steps
# each; 1 % ended in error, 0.4 % cancelled, the newest 200 still running
# (each with a step in progress and a fresh heartbeat) and the rest
# complete. Step transitions are written for the last day's tasks (what the
# overview reads). Edges are left out: no timed page reads them.
require_relative "support"
require "tasker_core/web"
require "rack/mock"

tasks = Bench.env_int("BENCH_WEB_TASKS", 1_000_000)
iterations = Bench.env_int("BENCH_WEB_ITERATIONS", 20)
url = Bench.recreate_database("tasker_bench_web")

TaskerCore.configure do |c|
  c.database_url = url
  c.template_paths = [File.join(Bench::ROOT, "bench/templates")]
end
TaskerCore.logger.level = Logger::WARN
TaskerCore.migrate!
TaskerCore.register_templates!

# A UUIDv7 for a given moment: tasker_uuid_v7() with the time as argument.
UUID_AT = <<~SQL
  encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
    PLACING substring(int8send(floor(extract(epoch FROM %<ts>s) * 1000)::bigint) FROM 3) FROM 1 FOR 6),
    52, 1), 53, 1), 'hex')::uuid
SQL

# Set-based fills, one statement each.
module WebBenchData
  module_function

  def fill(url, tasks)
    Bench.log "filling tasker_bench_web with #{tasks} tasks"
    t0 = Bench.monotonic
    Bench.with_pg(url) do |conn|
      conn.exec("SET synchronous_commit = off")
      { "tasks" => tasks_sql(tasks), "steps" => steps_sql,
        "transitions" => transitions_sql }.each do |what, sql|
        conn.exec(sql)
        Bench.log "#{what} written after #{(Bench.monotonic - t0).round(1)} s"
      end
      conn.exec("VACUUM ANALYZE")
      counts = conn.exec("SELECT (SELECT count(*) FROM tasker_tasks) AS tasks, " \
                         "(SELECT count(*) FROM tasker_workflow_steps) AS steps, " \
                         "(SELECT count(*) FROM tasker_workflow_step_transitions) AS transitions").first
      Bench.log "filled in #{(Bench.monotonic - t0).round(1)} s: #{counts}"
      counts
    end
  end

  # Tasks created evenly over 30 days; 1 % error, 0.4 % cancelled, the newest 200 running.
  def tasks_sql(tasks)
    <<~SQL
      INSERT INTO tasker_tasks (task_uuid, template_id, namespace, name, version, context, status, correlation_id,
                                created_at, updated_at, completed_at)
      SELECT #{format(UUID_AT, ts: 'g.ts')}, t.template_id, t.namespace, t.name, t.version,
             jsonb_build_object('order_id', g.i), g.status, gen_random_uuid(), g.ts, g.ts + interval '3 seconds',
             CASE WHEN g.status IN ('complete', 'error', 'cancelled') THEN g.ts + interval '3 seconds' END
        FROM tasker_task_templates t,
             LATERAL (SELECT i, now() - (#{tasks} - i) * (interval '30 days' / #{tasks}) AS ts,
                             CASE WHEN i > #{tasks} - 200 THEN 'in_progress'
                                  WHEN i % 100 = 0 THEN 'error'
                                  WHEN i % 250 = 1 THEN 'cancelled'
                                  ELSE 'complete' END AS status
                        FROM generate_series(1, #{tasks}) AS i) g
       WHERE t.namespace = 'bench' AND t.name = 'linear4'
    SQL
  end

  # 4 steps a task, in the states their task's state implies.
  def steps_sql
    <<~SQL
      INSERT INTO tasker_workflow_steps (step_uuid, task_uuid, named_step_id, name, position, status, attempts,
                                         max_attempts, results, last_error, enqueued_at, started_at, completed_at,
                                         heartbeat_at, created_at, updated_at)
      SELECT #{format(UUID_AT, ts: 't.created_at')}, t.task_uuid, ns.named_step_id, ns.name, ns.position,
             CASE WHEN t.status = 'complete' THEN 'complete'
                  WHEN t.status = 'cancelled' THEN (CASE WHEN ns.position = 0 THEN 'complete' ELSE 'cancelled' END)
                  WHEN t.status = 'error' THEN (CASE WHEN ns.position < 2 THEN 'complete'
                                                     WHEN ns.position = 2 THEN 'error' ELSE 'pending' END)
                  ELSE (CASE WHEN ns.position < 1 THEN 'complete' WHEN ns.position = 1 THEN 'in_progress'
                             ELSE 'pending' END) END,
             1, ns.max_attempts, CASE WHEN t.status = 'complete' THEN '1'::jsonb END,
             CASE WHEN t.status = 'error' AND ns.position = 2
                  THEN '{"class": "TaskerCore::PermanentError", "message": "card declined", "backtrace": []}'::jsonb END,
             t.created_at, t.created_at, t.completed_at,
             CASE WHEN t.status = 'in_progress' THEN clock_timestamp() END, t.created_at, t.updated_at
        FROM tasker_tasks t
        JOIN tasker_named_steps ns ON ns.template_id = t.template_id
    SQL
  end

  # The histories of the last day's steps, as the engine writes them.
  def transitions_sql
    <<~SQL
      INSERT INTO tasker_workflow_step_transitions (step_uuid, from_state, to_state, metadata, sort_key,
                                                    created_at)
      SELECT s.step_uuid, h.from_state, h.to_state,
             CASE WHEN h.to_state = 'in_progress' THEN jsonb_build_object('worker', 'bench-worker-' || (s.position % 3),
                                                                          'attempt', 1)
                  ELSE '{}'::jsonb END,
             h.sort_key,
             s.created_at + h.sort_key * interval '200 milliseconds'
        FROM tasker_workflow_steps s
        CROSS JOIN LATERAL (SELECT CASE s.status
                                     WHEN 'complete' THEN ARRAY['', 'pending', 'enqueued', 'in_progress', 'complete']
                                     WHEN 'error' THEN ARRAY['', 'pending', 'enqueued', 'in_progress', 'error']
                                     WHEN 'in_progress' THEN ARRAY['', 'pending', 'enqueued', 'in_progress']
                                     WHEN 'cancelled' THEN ARRAY['', 'pending', 'cancelled']
                                     ELSE ARRAY['', 'pending'] END AS path) p
        CROSS JOIN LATERAL (SELECT p.path[k] AS from_state, p.path[k + 1] AS to_state, k - 1 AS sort_key
                              FROM generate_series(1, cardinality(p.path) - 1) AS k) h
       WHERE s.created_at >= now() - interval '1 day'
       ORDER BY s.created_at, s.step_uuid, h.sort_key
    SQL
  end
end

WebBenchData.fill(url, tasks)

app = Rack::MockRequest.new(TaskerCore::Web)
middle = Bench.with_pg(url) do |conn|
  conn.exec("SELECT task_uuid FROM tasker_tasks ORDER BY task_uuid DESC OFFSET #{tasks / 2} LIMIT 1").getvalue(0, 0)
end
day = 86_400
range = "from=#{(Time.now.utc - (10 * day)).strftime('%Y-%m-%dT%H:%M')}&" \
        "to=#{(Time.now.utc - (9 * day)).strftime('%Y-%m-%dT%H:%M')}"
pages = {
  "overview" => "/",
  "task_list" => "/tasks",
  "task_list_page_in_the_middle" => "/tasks?before=#{middle}",
  "task_list_errors" => "/tasks?status=error",
  "task_list_one_day_ten_days_ago" => "/tasks?#{range}",
  "task_list_template_and_version" => "/tasks?namespace=bench&name=linear4&version=1.0.0"
}
timings = pages.to_h do |name, path|
  3.times { app.get(path) }
  times = Array.new(iterations) do
    t = Bench.monotonic
    response = app.get(path)
    raise "GET #{path}: #{response.status}\n#{response.body[0, 500]}" unless response.status == 200

    (Bench.monotonic - t) * 1000
  end
  Bench.log format("%-32s p50 %7.1f ms  p90 %7.1f ms", name, Bench.median(times), Bench.percentile(times, 90))
  [name, { "p50_ms" => Bench.median(times).round(1), "p90_ms" => Bench.percentile(times, 90).round(1) }]
end

Bench.write_part("web_dashboard", { "tasks" => tasks, "iterations" => iterations, "pages" => timings,
                                    "overview_p50_ms" => timings.dig("overview", "p50_ms"),
                                    "task_list_p50_ms" => timings.dig("task_list", "p50_ms") })
slow = timings.select { |name, t| %w[overview task_list].include?(name) && t["p50_ms"] >= 200 }
abort "over 200 ms: #{slow.keys.join(', ')}" unless slow.empty?
