# frozen_string_literal: true

require_relative "../fixtures/handlers/limits_handlers"

# For the specs of what waits for a limit (status, rake tasker:status, the
# metrics, the dashboard): a namespace of the example's own with three
# limited templates:
# - rated: `pay` takes one token per 100 s per merchant (a token comes back
#   100 s after it is taken), its first attempt failing with a retry an
#   hour later; `confirm` after it;
# - step_slot: `charge` holds one slot per customer (and is held in its
#   handler while the context says hold: true); `receipt` after it;
# - task_slot: one task in progress per customer.
# After each example the held handlers are let go, the example's @runtime
# stopped, its @tasks cancelled and its queue purged.
RSpec.shared_context "limit waits" do
  let(:namespace) { unique_name("waits") }
  let(:key) { SecureRandom.hex(4) }

  before do
    TaskerCore.client.register_template_yaml(<<~YAML, "waits_rated.yaml")
      namespace: #{namespace}
      name: rated
      version: 1.0.0
      steps:
        - name: pay
          handler: { callable: Limits::RetryInAnHour }
          retry: { retryable: true, max_attempts: 2 }
          rate_limit: { key: context.merchant, per_second: 0.01, burst: 1 }
        - { name: confirm, dependencies: [pay], handler: { callable: Probe::Echo } }
    YAML
    TaskerCore.client.register_template_yaml(<<~YAML, "waits_step_slot.yaml")
      namespace: #{namespace}
      name: step_slot
      version: 1.0.0
      steps:
        - name: charge
          handler: { callable: Limits::Measure }
          concurrency: { key: context.customer, max: 1 }
        - { name: receipt, dependencies: [charge], handler: { callable: Limits::Receipt } }
    YAML
    TaskerCore.client.register_template_yaml(<<~YAML, "waits_task_slot.yaml")
      namespace: #{namespace}
      name: task_slot
      version: 1.0.0
      concurrency: { key: context.customer, max: 1 }
      steps:
        - { name: open, handler: { callable: Limits::Open } }
        - { name: close, dependencies: [open], handler: { callable: Limits::Close } }
    YAML
  end

  after do
    Limits::Tally.open!(key)
    @runtime&.stop(timeout: 10)
    @tasks&.each { |task| TaskerCore.cancel_task(task) }
    TaskerCore.message_service.purge_queue(TaskerCore.queue_name(namespace))
  end

  # `count` tasks of template `name`, created one at a time (each commits).
  def create(name, count, context)
    Array.new(count) do |i|
      TaskerCore.create_task(namespace: namespace, name: name, version: "1.0.0", context: context.merge("i" => i))
    end
  end
end
