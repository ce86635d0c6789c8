# frozen_string_literal: true

require "spec_helper"
require "net/http"
require "time"
require_relative "../support/prometheus_text"
require_relative "../fixtures/handlers/decision_handlers"

# /metrics and /health served by the Rust core: a workflow runs in this
# process, then the endpoints are scraped over HTTP and parsed.
RSpec.describe "Operations: metrics and health" do
  let(:uuid_pattern) { /\h{8}-?\h{4}-?\h{4}-?\h{4}-?\h{12}/ }

  let(:namespace) { unique_name("ops") }

  before do
    TaskerCore.client.register_template_yaml(<<~YAML, "operations.yaml")
      namespace: #{namespace}
      name: metered
      version: 1.0.0
      steps:
        - name: flaky
          handler: { callable: Probe::FlakyOnce }
          retry: { retryable: true, max_attempts: 3, backoff_base_ms: 50, max_backoff_ms: 200 }
        - name: doomed
          dependencies: [flaky]
          handler: { callable: Probe::FailsForGood }
        - name: echo
          handler: { callable: Probe::Echo }
    YAML
  end

  def get(server, path)
    Net::HTTP.start("127.0.0.1", server.port, open_timeout: 5, read_timeout: 10) { |http| http.get(path) }
  end

  def run_tasks(count)
    runtime = TaskerCore.start(orchestrator: true, worker: { namespaces: [namespace], concurrency: 4 })
    tasks = Array.new(count) do |i|
      TaskerCore.create_task(namespace: namespace, name: "metered", version: "1.0.0", context: { "i" => i })
    end
    tasks.each { |task| expect(task.wait(timeout: 30).status).to eq("error") }
    tasks
  ensure
    runtime&.stop(timeout: 10)
  end

  it "serves /metrics in the Prometheus text format with exact counts for the steps run and no uuid in a label" do
    run_tasks(3)
    server = TaskerCore::Operations.serve(port: 0)
    response = get(server, "/metrics")
    expect(response.code).to eq("200")
    expect(response["Content-Type"]).to start_with("text/plain; version=0.0.4")
    metrics = PrometheusText.parse(response.body)

    step = ->(name) { { namespace: namespace, template: "metered", step: name } }
    # flaky fails its first attempt (retried), then completes; doomed fails
    # for good; echo completes: three tasks of each.
    expect(metrics.value("tasker_steps_started_total", **step["flaky"])).to eq(6)
    expect(metrics.value("tasker_steps_retried_total", **step["flaky"])).to eq(3)
    expect(metrics.value("tasker_steps_completed_total", **step["flaky"])).to eq(3)
    expect(metrics.value("tasker_steps_started_total", **step["doomed"])).to eq(3)
    expect(metrics.value("tasker_steps_failed_total", **step["doomed"])).to eq(3)
    expect(metrics.value("tasker_steps_completed_total", **step["doomed"])).to be_nil
    expect(metrics.value("tasker_steps_started_total", **step["echo"])).to eq(3)
    expect(metrics.value("tasker_steps_completed_total", **step["echo"])).to eq(3)
    expect(metrics.value("tasker_steps_retried_total", **step["echo"])).to be_nil
    expect(metrics.value("tasker_tasks_finished_total", namespace: namespace, template: "metered", status: "error"))
      .to eq(3)

    expect(metrics.types).to include("tasker_step_duration_seconds" => "histogram",
                                     "tasker_task_duration_seconds" => "histogram",
                                     "tasker_step_queue_wait_seconds" => "histogram",
                                     "tasker_steps_completed_total" => "counter",
                                     "tasker_queue_depth" => "gauge")
    buckets = metrics.select("tasker_step_duration_seconds_bucket", **step["flaky"], outcome: "complete")
    expect(buckets.map { |b| b.labels["le"] }).to include("0.005", "1", "300", "+Inf")
    expect(buckets.last.value).to eq(3)
    expect(metrics.value("tasker_step_duration_seconds_count", **step["flaky"], outcome: "failed")).to eq(3)
    task_buckets = metrics.select("tasker_task_duration_seconds_bucket", namespace: namespace, status: "error")
    expect(task_buckets.last.labels["le"]).to eq("+Inf")
    expect(task_buckets.last.value).to eq(3)

    queue = TaskerCore.queue_name(namespace)
    expect(metrics.value("tasker_queue_depth", queue: queue)).to eq(0)
    expect(metrics.value("tasker_queue_oldest_message_age_seconds", queue: queue)).to eq(0)
    expect(metrics.value("tasker_queue_depth", queue: TaskerCore.task_requests_queue)).to eq(0)
    expect(metrics.value("tasker_db_pool_max_connections")).to eq(TaskerCore.client.config["max_connections"])
    expect(metrics.value("tasker_worker_steps_in_flight")).to eq(0)

    labels = metrics.samples.flat_map { |s| s.labels.values }
    expect(labels).not_to be_empty
    expect(labels.grep(uuid_pattern)).to eq([])
    expect(TaskerCore.metrics_text).to include("tasker_steps_started_total{namespace=\"#{namespace}\"")
  ensure
    server&.stop
  end

  it "counts the steps decisions skipped, by namespace and template, exactly" do
    decide = unique_name("opsdecide")
    TaskerCore.client.register_template_yaml(<<~YAML, "operations_decide.yaml")
      namespace: #{decide}
      name: shipping
      version: 1.0.0
      steps:
        - { name: validate, handler: { callable: Decisions::Record } }
        - name: choose_carrier
          dependencies: [validate]
          decision: true
          handler: { callable: Decisions::ChooseFromContext }
        - { name: ship_by_courier, dependencies: [choose_carrier], handler: { callable: Decisions::Record } }
        - { name: ship_by_post, dependencies: [choose_carrier], handler: { callable: Decisions::Record } }
        - { name: post_label, dependencies: [ship_by_post], handler: { callable: Decisions::Record } }
        - name: notify
          dependencies: [ship_by_courier, ship_by_post]
          handler: { callable: Decisions::Notify }
    YAML
    runtime = TaskerCore.start(orchestrator: true, worker: { namespaces: [decide], concurrency: 4 })
    # The courier skips ship_by_post and post_label (2 each), the post skips
    # ship_by_courier (1), both skip nothing: 5.
    choices = [%w[ship_by_courier], %w[ship_by_courier], %w[ship_by_post], %w[ship_by_courier ship_by_post]]
    tasks = choices.map do |choose|
      TaskerCore.create_task(namespace: decide, name: "shipping", version: "1.0.0", context: { "choose" => choose })
    end
    tasks.each { |task| expect(task.wait(timeout: 30).status).to eq("complete") }
    expect(tasks.map { |t| t.workflow_steps.reload.count { |s| s.status == "skipped" } }).to eq([2, 2, 1, 0])

    metrics = PrometheusText.parse(TaskerCore.metrics_text)
    expect(metrics.value("tasker_steps_skipped_total", namespace: decide, template: "shipping")).to eq(5)
    expect(metrics.select("tasker_steps_skipped_total", namespace: decide).size).to eq(1)
    expect(metrics.types).to include("tasker_steps_skipped_total" => "counter",
                                     "tasker_steps_waiting_for_limit" => "gauge",
                                     "tasker_tasks_waiting_for_limit" => "gauge")
    expect(metrics.help.keys).to include("tasker_steps_skipped_total", "tasker_steps_waiting_for_limit",
                                         "tasker_tasks_waiting_for_limit")
    # Nothing of this namespace waits for a limit: its gauges say 0.
    expect(metrics.value("tasker_steps_waiting_for_limit", namespace: decide, limit: "rate_limit")).to eq(0)
    expect(metrics.value("tasker_steps_waiting_for_limit", namespace: decide, limit: "concurrency")).to eq(0)
    expect(metrics.value("tasker_tasks_waiting_for_limit", namespace: decide)).to eq(0)
  ensure
    runtime&.stop(timeout: 10)
  end

  it "parses with a parser that refuses what Prometheus refuses" do
    expect { PrometheusText.parse(%(# TYPE x counter\nx{a="1} 1\n)) }.to raise_error(PrometheusText::ParseError)
    expect { PrometheusText.parse("y 1\n") }.to raise_error(PrometheusText::ParseError, /before its # TYPE/)
    expect { PrometheusText.parse("# TYPE x counter\nx one\n") }.to raise_error(PrometheusText::ParseError)
    histogram = %(# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n)
    expect { PrometheusText.parse(histogram) }.to raise_error(PrometheusText::ParseError, /not cumulative/)
    parsed = PrometheusText.parse(%(# HELP x it\n# TYPE x counter\nx{a="q\\"uote",b="2"} 3 1700000000\n))
    expect(parsed.value("x", a: 'q"uote', b: "2")).to eq(3)
  end

  it "counts queue depth and the age of the oldest message while steps wait" do
    tasks = Array.new(3) do |i|
      TaskerCore.create_task(namespace: namespace, name: "metered", version: "1.0.0", context: { "i" => i })
    end
    if SPEC_PROVIDER == :rabbitmq # an orchestrator sends a new task's first messages
      orchestrator = TaskerCore.start(orchestrator: true)
      sleep 0.1 until TaskerCore.message_service.stats(TaskerCore.queue_name(namespace))[:depth] == 6
    end
    sleep 1.1
    metrics = PrometheusText.parse(TaskerCore.metrics_text)
    queue = TaskerCore.queue_name(namespace)
    expect(metrics.value("tasker_queue_depth", queue: queue)).to eq(6) # flaky and echo of each task
    expect(metrics.value("tasker_queue_visible_messages", queue: queue)).to eq(6)
    expect(metrics.value("tasker_queue_oldest_message_age_seconds", queue: queue)).to be >= 1
  ensure
    orchestrator&.stop(timeout: 5)
    tasks&.each { |task| TaskerCore.cancel_task(task) }
    TaskerCore.message_service.purge_queue(TaskerCore.queue_name(namespace))
  end

  it "reports health: ready with the database and broker answering, this process's components and heartbeat" do
    server = TaskerCore::Operations.serve(port: 0)
    runtime = TaskerCore.start(orchestrator: true, worker: { namespaces: [namespace], concurrency: 2 })
    task = TaskerCore.create_task(namespace: namespace, name: "metered", version: "1.0.0", context: {})
    task.wait(timeout: 30)

    health = TaskerCore.health
    expect(health["ready"]).to be(true)
    expect(health["database"]).to include("ok" => true, "error" => nil)
    expect(health["broker"]).to include("ok" => true, "provider" => SPEC_PROVIDER.to_s)
    expect(health["queues"].map { |q| q["queue"] }).to include(TaskerCore.queue_name(namespace))
    worker = health["components"].find { |c| c["kind"] == "worker" && c["namespaces"] == [namespace] }
    expect(worker).to include("in_flight" => 0, "concurrency" => 2)
    expect(Time.iso8601(health["last_heartbeat_at"])).to be_within(30).of(Time.now)
    expect(health["components"].map { |c| c["kind"] }).to include("orchestrator")

    expect(get(server, "/health/live").code).to eq("200")
    ready = get(server, "/health/ready")
    expect(ready.code).to eq("200")
    expect(JSON.parse(ready.body)).to include("ready" => true)
    expect(get(server, "/nothing").code).to eq("404")

    runtime.stop(timeout: 10)
    runtime = nil
    expect(TaskerCore.health["components"].map { |c| c["namespaces"] }).not_to include([namespace])
  ensure
    runtime&.stop(timeout: 10)
    server&.stop
  end
end
