# frozen_string_literal: true

# `rake tasker:worker` run inside the Rails app, as an operator runs it:
# it loads the app (environment), takes its namespaces and concurrency from
# config/tasker.yml, runs the app's handlers, and stops cleanly on SIGTERM.
# The orchestrator runs in this process. The worker process must see the
# order, so nothing here runs in a test transaction.
RSpec.describe "rake tasker:worker in the Rails app", tasker: :real do
  self.use_transactional_tests = false
  run_tasker_around_each(worker: nil)

  def spawn_rake_worker(gateway_latency:)
    env = app_env("PAYMENT_GATEWAY_LATENCY" => gateway_latency.to_s, "TASKER_STOP_TIMEOUT" => "20")
    Process.spawn(env, "rake", "tasker:worker", chdir: APP_ROOT, out: File::NULL,
                                                err: ENV.fetch("TASKER_SPEC_LOG", File::NULL))
  end

  def runs(order, step_name)
    order.events.where(step_name: step_name).count
  end

  it "finishes the step in flight on SIGTERM and exits 0; a successor finishes the task; each step ran once" do
    widget = product("widget", price_cents: 1250, stock: 5)
    workers = [spawn_rake_worker(gateway_latency: 1)]
    begin
      order = place_order({ widget => 2 })
      # The charge is in flight: the handler is waiting on the gateway.
      wait_until(timeout: 60, what: "the worker to start charging") { runs(order, "charge_payment") == 1 }

      status = stop_process(workers.pop)
      expect(status&.exitstatus).to eq(0)
      task = order.fulfillment_task
      charge_step = task.step("charge_payment")
      expect([charge_step.status, charge_step.attempts]).to eq(["complete", 1])
      expect(order.reload.status).to eq("paid")

      workers << spawn_rake_worker(gateway_latency: 0)
      task.wait(timeout: 60)
      order.reload

      expect(task.status).to eq("complete")
      expect(order).to have_attributes(status: "shipped", tracking_number: format("TRK%08d", order.id))
      expect(order.charges.map { |c| [c.status, c.amount_cents] }).to eq([["succeeded", 2500]])
      expect(widget.reload.stock).to eq(3)
      expect(step_rows(task)).to eq([["validate_order", "complete", 1], ["reserve_inventory", "complete", 1],
                                     ["charge_payment", "complete", 1], ["ship_order", "complete", 1]])
      expect(%w[validate_order reserve_inventory charge_payment ship_order].map { |s| runs(order, s) })
        .to eq([1, 1, 1, 1])
      expect(history(charge_step.transitions).count { |_, to| to == "complete" }).to eq(1)
      expect(order.events.map(&:pid).uniq.size).to eq(2) # two worker processes shared the task
    ensure
      workers.each { |pid| stop_process(pid) }
    end
  end
end
