# frozen_string_literal: true

require "spec_helper"
require "open3"

# TaskerCore.status and rake tasker:status / tasker:dead_letters: exact
# counts for a namespace of this example's own, in states made on purpose.
RSpec.describe "Operations: status and dead letters" do
  let(:namespace) { unique_name("stat") }
  let(:queue) { TaskerCore.queue_name(namespace) }
  let(:connection) { ActiveRecord::Base.connection }

  before do
    TaskerCore.client.register_template_yaml(<<~YAML, "status.yaml")
      namespace: #{namespace}
      name: pair
      version: 1.0.0
      steps:
        - { name: first, handler: { callable: Probe::Echo } }
        - { name: second, dependencies: [first], handler: { callable: Probe::Echo } }
    YAML
  end

  after do
    @tasks&.each { |task| TaskerCore.cancel_task(task) }
    TaskerCore.message_service.purge_queue(queue)
  end

  def create_tasks(count)
    @tasks = Array.new(count) do |i|
      TaskerCore.create_task(namespace: namespace, name: "pair", version: "1.0.0", context: { "i" => i })
    end
    return @tasks unless SPEC_PROVIDER == :rabbitmq

    # An orchestrator sends a new task's first messages.
    orchestrator = TaskerCore.start(orchestrator: true)
    deadline = Time.now + 10
    sleep 0.05 until TaskerCore.message_service.stats(queue)[:depth] == count || Time.now > deadline
    orchestrator.stop(timeout: 5)
    @tasks
  end

  def first_steps
    @tasks.map { |task| task.step("first").id }
  end

  def namespace_status
    TaskerCore.status["namespaces"].find { |n| n["namespace"] == namespace }
  end

  def rake(*args)
    env = { "DATABASE_URL" => TEST_DATABASE_URL, "RUBYLIB" => File.join(ROOT, "lib"),
            "TASKER_BOOT" => File.join(ROOT, "spec/support/boot.rb") }
    Open3.capture2e(env, "rake", "-f", File.join(ROOT, "Rakefile"), *args)
  end

  it "counts tasks, steps in flight, stuck steps, live workers, queue depth and dead letters exactly" do
    create_tasks(4)
    expect(namespace_status).to eq(
      "namespace" => namespace, "tasks_pending" => 0, "tasks_in_progress" => 4, "steps_enqueued" => 4,
      "steps_in_progress" => 0, "steps_waiting_for_retry" => 0, "steps_stuck_in_progress" => 0,
      "steps_stuck_enqueued" => 0, "steps_enqueued_by_priority" => { "0" => 4 },
      "steps_waiting_for_rate_limit" => 0, "steps_waiting_for_slot" => 0, "tasks_waiting_for_slot" => 0
    )
    queue_status = TaskerCore.status["queues"].find { |q| q["queue"] == queue }
    expect(queue_status).to include("depth" => 4, "visible" => 4, "dead_letters" => 0, "error" => nil)
    expect(queue_status["oldest_age_seconds"]).to be >= 0

    # Two claimed by a "worker" (the claim function, as a worker calls it),
    # one of them since gone quiet; one enqueued for too long.
    claimed = first_steps.first(2)
    TaskerCore::SqlFunctions.claim_steps(claimed, worker: "host-a:1:abc", namespaces: [namespace],
                                                  stale_after_seconds: 30)
    connection.execute(<<~SQL)
      UPDATE tasker_workflow_steps SET heartbeat_at = now() - interval '1 hour', started_at = now() - interval '1 hour'
       WHERE step_uuid = '#{claimed.last}'
    SQL
    connection.execute(<<~SQL)
      UPDATE tasker_workflow_steps SET enqueued_at = now() - interval '1 hour' WHERE step_uuid = '#{first_steps[2]}'
    SQL
    expect(namespace_status).to include("steps_enqueued" => 2, "steps_in_progress" => 2,
                                        "steps_stuck_in_progress" => 1, "steps_stuck_enqueued" => 1)
    expect(TaskerCore.status["workers"]).to include("worker" => "host-a:1:abc", "steps_in_progress" => 1)

    # A dead letter, then the rake tasks' reports.
    message = TaskerCore.message_service.receive(queue, max: 1).first
    TaskerCore.message_service.dead_letter(queue, message.receipt)
    expect(TaskerCore.status["queues"].find { |q| q["queue"] == queue }).to include("dead_letters" => 1)
    expect(TaskerCore.dead_letter_count(queue)).to eq(1)

    output, status = rake("tasker:status")
    expect(status).to be_success, output
    # RabbitMQ: the three messages left are prefetched by this process's
    # consumer (the receive above started it), so the broker counts none
    # ready for the rake process.
    depth = SPEC_PROVIDER == :rabbitmq ? 0 : 3
    expect(output).to match(/#{queue}\s+depth=#{depth}\s+visible=#{depth}\s+oldest=\S+\s+dead_letters=1/)
    expect(output).to include("#{namespace} ").and include("steps enqueued=2 in_progress=2 waiting_for_retry=0 " \
                                                             "stuck_in_progress=1 stuck_enqueued=1")
    expect(output).to match(/host-a:1:abc\s+steps=1/)
  end

  it "lists, replays and discards dead letters from Ruby and rake" do
    create_tasks(2)
    2.times do
      message = TaskerCore.message_service.receive(queue, max: 1).first
      TaskerCore.message_service.dead_letter(queue, message.receipt)
    end
    letters = TaskerCore.dead_letters(queue)
    expect(letters.map { |l| l["payload"]["step_uuid"] }).to match_array(first_steps)
    expect(letters.map { |l| l["queue"] }.uniq).to eq([queue])

    output, status = rake("tasker:dead_letters", "QUEUE=#{queue}")
    expect(status).to be_success, output
    letters.each { |l| expect(output).to include(l["id"]) }
    output, = rake("tasker:dead_letters")
    expect(output).to match(/#{queue}\s+dead letters: 2/)

    output, status = rake("tasker:dead_letters", "QUEUE=#{queue}", "DISCARD=#{letters.first['id']}")
    expect(status).to be_success, output
    expect(output).to include("discarded dead letter #{letters.first['id']}")
    replayed = letters.last
    expect(TaskerCore.replay_dead_letter(queue, replayed["id"])).to be(true)
    expect(TaskerCore.replay_dead_letter(queue, replayed["id"])).to be(false)
    expect(TaskerCore.dead_letter_count(queue)).to eq(0)

    # The replayed step runs.
    runtime = TaskerCore.start(orchestrator: false, worker: { namespaces: [namespace], concurrency: 1 })
    step = TaskerCore::Models::WorkflowStep.find(replayed["payload"]["step_uuid"])
    deadline = Time.now + 15
    sleep 0.05 until step.reload.status == "complete" || Time.now > deadline
    expect(step.status).to eq("complete")
    expect(step.attempts).to eq(1)
  ensure
    runtime&.stop(timeout: 10)
  end
end
