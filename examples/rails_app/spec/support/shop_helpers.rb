# frozen_string_literal: true

module ShopHelpers
  # A product with its own SKU, so examples do not share stock.
  def product(name, price_cents:, stock:)
    Product.create!(sku: "#{name.upcase}-#{SecureRandom.hex(3)}", name: name, price_cents: price_cents, stock: stock)
  end

  def place_order(items, token: "tok_visa")
    Order.place!(customer_email: "ada@example.com", payment_token: token, items: items)
  end

  def step_rows(task)
    task.workflow_steps.map { |s| [s.name, s.status, s.attempts] }
  end

  def history(transitions)
    transitions.map { |t| [t.from_state, t.to_state] }
  end

  def events_of(order)
    order.events.reload.map { |e| [e.step_name, e.message] }
  end

  # Runs an orchestrator and a worker for fulfillment in this process
  # around each example of the group.
  module ClassMethods
    def run_tasker_around_each(orchestrator: true, worker: { namespaces: %w[fulfillment], concurrency: 3 })
      around do |example|
        runtime = TaskerCore.start(orchestrator: orchestrator, worker: worker)
        example.run
      ensure
        runtime&.stop(timeout: 10)
      end
    end
  end
end
