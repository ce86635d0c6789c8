# frozen_string_literal: true

require "spec_helper"
require "net/http"
require "socket"
require_relative "../support/prometheus_text"

# /metrics and /health served by the processes an operator runs: the
# tasker-orchestrator binary and rake tasker:worker, with TASKER_METRICS_PORT.
RSpec.describe "Operations endpoints of real processes" do
  def free_port
    server = TCPServer.new("127.0.0.1", 0)
    server.addr[1]
  ensure
    server&.close
  end

  def get(port, path, within: 30)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + within
    begin
      Net::HTTP.start("127.0.0.1", port, open_timeout: 2, read_timeout: 10) { |http| http.get(path) }
    rescue Errno::ECONNREFUSED
      raise if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep 0.1
      retry
    end
  end

  # A namespace of its own: with RabbitMQ, a queue this process once read
  # keeps its consumer (and the messages it prefetches) for good.
  let(:namespace) { unique_name("opsproc") }

  before do
    TaskerCore.client.register_template_yaml(<<~YAML, "operations_process.yaml")
      namespace: #{namespace}
      name: retries
      version: 1.0.0
      steps:
        - name: flaky
          handler: { callable: Probe::FlakyOnce }
          retry: { retryable: true, max_attempts: 3, backoff_base_ms: 50, max_backoff_ms: 200 }
        - { name: after_flaky, dependencies: [flaky], handler: { callable: Probe::Echo } }
    YAML
  end

  def spawn_rake_worker(port)
    env = { "DATABASE_URL" => TEST_DATABASE_URL, "RUBYLIB" => File.join(ROOT, "lib"),
            "TASKER_BOOT" => File.join(ROOT, "spec/support/boot.rb"), "TASKER_METRICS_PORT" => port.to_s }
    Process.spawn(env, "rake", "-f", File.join(ROOT, "Rakefile"), "tasker:worker", "NAMESPACES=#{namespace}",
                  "CONCURRENCY=2", out: File::NULL, err: ENV.fetch("TASKER_SPEC_LOG", File::NULL))
  end

  it "serves /metrics and /health from tasker-orchestrator and rake tasker:worker" do
    orchestrator_port = free_port
    orchestrator = spawn_orchestrator(env: { "TASKER_METRICS_PORT" => orchestrator_port.to_s })
    worker_port = free_port
    worker = spawn_rake_worker(worker_port)
    begin
      # The endpoint answers from the binary's start; the orchestrator is
      # listed once it has started.
      ready = eventually_get(orchestrator_port, "/health/ready") do |response|
        JSON.parse(response.body)["components"].any?
      end
      expect(ready.code).to eq("200")
      expect(JSON.parse(ready.body)["components"].map { |c| c["kind"] }).to eq(["orchestrator"])
      metrics = PrometheusText.parse(get(orchestrator_port, "/metrics").body)
      expect(metrics.value("tasker_queue_depth", queue: TaskerCore.task_requests_queue)).to eq(0)

      expect(get(worker_port, "/health/live").code).to eq("200")
      # The worker reports ready once its worker is registered.
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 30
      until JSON.parse(get(worker_port, "/health/ready").body)["components"].any? { |c| c["kind"] == "worker" }
        raise "the rake worker never started" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

        sleep 0.1
      end
      task = TaskerCore.create_task(namespace: namespace, name: "retries", version: "1.0.0", context: {})
      expect(task.wait(timeout: 30).status).to eq("complete")

      metrics = PrometheusText.parse(get(worker_port, "/metrics").body)
      labels = { namespace: namespace, template: "retries" }
      expect(metrics.value("tasker_steps_started_total", **labels, step: "flaky")).to eq(2)
      expect(metrics.value("tasker_steps_retried_total", **labels, step: "flaky")).to eq(1)
      expect(metrics.value("tasker_steps_completed_total", **labels, step: "flaky")).to eq(1)
      expect(metrics.value("tasker_steps_completed_total", **labels, step: "after_flaky")).to eq(1)
      expect(metrics.value("tasker_tasks_finished_total", **labels, status: "complete")).to eq(1)
      expect(metrics.value("tasker_worker_concurrency")).to eq(2)
    ensure
      TaskerCore.cancel_task(task) if task
      # Both stopped before anything is asserted: an orchestrator left
      # running would send messages for the next examples' tasks.
      worker_status = stop_process(worker)
      stop_process(orchestrator)
      expect(worker_status&.exitstatus).to eq(0)
    end
  end

  def eventually_get(port, path, timeout: 30)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    loop do
      response = get(port, path)
      return response if yield(response)
      raise "#{path} on port #{port} never became ready" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep 0.1
    end
  end
end
