# frozen_string_literal: true

namespace :shop do
  desc "Place an order and fulfil it with an orchestrator and a worker in this process (TOKEN=tok_decline_... declines)"
  task demo: :environment do
    TaskerCore.migrate!
    TaskerCore.register_templates!
    widget = Product.find_or_create_by!(sku: "WIDGET-1") { |p| p.assign_attributes(name: "Widget", price_cents: 1250) }
    widget.update!(stock: 100) if widget.stock < 2
    runtime = TaskerCore.start(orchestrator: true, worker: { namespaces: %w[fulfillment], concurrency: 2 })
    begin
      order = Order.place!(customer_email: "ada@example.com", payment_token: ENV.fetch("TOKEN", "tok_visa"),
                           items: { widget => 2 })
      task = order.fulfillment_task.wait(timeout: 30)
      order.reload
      puts "order ##{order.id}: #{order.status}, total #{order.total_cents} cents, " \
           "tracking #{order.tracking_number.inspect}"
      puts "task #{task.task_uuid}: #{task.status}"
      task.workflow_steps.each do |step|
        puts format("  %-18s %-9s attempts=%d %s", step.name, step.status, step.attempts,
                    (step.results || step.last_error&.fetch("message")).to_json)
      end
      puts "#{widget.sku} stock now #{widget.reload.stock}"
    ensure
      runtime.stop(timeout: 10)
    end
  end
end
