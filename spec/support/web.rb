# frozen_string_literal: true

require "rack/test"
require "tasker_core/web"
require "tasker_core/web/server"
require_relative "../fixtures/handlers/web_handlers"

# Shared by the dashboard specs (spec/tasker_core/web, spec/browser). They
# own the namespaces webui (a diamond a worker runs) and webdlq (a queue no
# worker reads) and empty both before each example, so counts on a page
# filtered to them are exact whatever else the suite left in the database.
module WebSpecHelpers
  WEB_NAMESPACES = %w[webui webdlq].freeze
  TERMINAL = %w[complete error cancelled].freeze

  # The queues of the two namespaces, with this run's queue prefix.
  def webui_queue
    TaskerCore.queue_name("webui")
  end

  def webdlq_queue
    TaskerCore.queue_name("webdlq")
  end

  def reset_web_namespaces!
    service = TaskerCore.message_service
    WEB_NAMESPACES.each do |ns|
      queue = TaskerCore.queue_name(ns)
      service.purge_queue(queue)
      if SPEC_PROVIDER == :pgmq
        ActiveRecord::Base.connection.execute("DELETE FROM pgmq.a_#{queue}")
      else
        service.purge_queue("#{queue}.dlq")
      end
    end
    ActiveRecord::Base.connection.execute(
      "DELETE FROM tasker_tasks WHERE namespace IN (#{WEB_NAMESPACES.map { |n| "'#{n}'" }.join(', ')})"
    )
  end

  def create_diamond(context = {}, identity_key: nil)
    TaskerCore.create_task(namespace: "webui", name: "diamond_order", version: "1.0.0", context: context,
                           identity_key: identity_key)
  end

  def create_parked(context = {})
    TaskerCore.create_task(namespace: "webdlq", name: "parked", version: "2.1.0", context: context)
  end

  # Polls until the block returns a truthy value; fails after `timeout`.
  def eventually(timeout: 15, what: "the condition")
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    loop do
      result = yield
      return result if result
      if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
        raise "timed out after #{timeout} s waiting for #{what}"
      end

      sleep 0.05
    end
  end

  def step_of(task, name)
    TaskerCore::Models::WorkflowStep.find_by!(task_uuid: task.task_uuid, name: name)
  end

  def wait_for_step(task, name, status)
    eventually(what: "#{name} to be #{status}") { step_of(task, name).status == status }
  end

  # A task whose step `right` failed for good (left and start complete).
  def failed_diamond(note: "plain")
    task = create_diamond({ "fail_step" => "right", "note" => note })
    task.wait(timeout: 15)
    raise "expected the diamond to fail, it is #{task.status}" unless task.status == "error"

    task
  end

  # A task whose step `left` is running until the example ends.
  def held_diamond
    task = create_diamond({ "hold" => "left" })
    (@held ||= []) << task.task_uuid
    wait_for_step(task, "left", "in_progress")
    task
  end

  def release_held
    Array(@held).each { |uuid| WebFixtures.release(uuid) }
  end

  # Dead-letters a payload on a queue the way the core does with a poison
  # message, and waits until the dead-letter store holds it.
  def dead_letter(queue, payload, reason: nil)
    service = TaskerCore.message_service
    before = service.stats("#{queue}.dlq")[:depth] unless SPEC_PROVIDER == :pgmq
    service.send_message(queue, payload)
    message = eventually(what: "the message on #{queue}") do
      service.receive(queue, max: 1, visibility_timeout: 30).first
    end
    service.dead_letter(queue, message.receipt, reason: reason)
    return if SPEC_PROVIDER == :pgmq

    eventually(what: "the message in #{queue}.dlq") { service.stats("#{queue}.dlq")[:depth] == before + 1 }
  end

  def archived_count(queue)
    ActiveRecord::Base.connection.select_value("SELECT count(*) FROM pgmq.a_#{queue}").to_i
  end

  def worker_of(step)
    TaskerCore::Models::WorkflowStepTransition.where(step_uuid: step.step_uuid, to_state: "in_progress")
                                              .order(:sort_key).last.metadata["worker"]
  end
end

# Rack-level requests with a cookie jar (rack-test).
module WebRackHelpers
  include Rack::Test::Methods

  def app
    TaskerCore::Web
  end

  def page_html(path)
    get path
    raise "GET #{path}: #{last_response.status}\n#{last_response.body[0, 2000]}" unless last_response.status == 200

    last_response.body
  end

  def csrf_token_from(html)
    html[/<meta name="csrf-token" content="([^"]+)">/, 1] or raise "no CSRF token on the page"
  end

  # POSTs with the token a GET of `from` issued, as a browser would.
  def post_with_token(path, from:, params: {})
    token = csrf_token_from(page_html(from))
    post path, params.merge("authenticity_token" => token)
  end

  # [[name, state]] of the DAG's nodes in an HTML page.
  def dag_nodes(html)
    html.scan(/<g class="node [^"]*" data-step="([^"]*)" data-state="([^"]*)"/)
  end
end

RSpec.configure do |config|
  config.include WebSpecHelpers, :web
  config.include WebRackHelpers, :web
  config.before(:each, :web) { reset_web_namespaces! }
  config.after(:each, :web) do
    release_held
    TaskerCore::Web.read_only = false
  end
end
