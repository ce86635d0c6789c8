# frozen_string_literal: true

# Commands that write into the app (tasker:install, the generator) and a
# development-mode reload, run against a scratch copy of this app.
RSpec.describe "the app's tasker commands, on a scratch copy" do
  before(:all) { @dir = scratch_copy_of_app }
  after(:all) { FileUtils.rm_rf(@dir) }

  let(:dir) { @dir }

  def sh(*command, env: {}, dir: self.dir)
    output, status = run_command(env, *command, dir: dir)
    raise "#{command.join(' ')} failed (#{status.exitstatus}):\n#{output}" unless status.success?

    output
  end

  it "rake tasker:install adds one migration, config/tasker.yml and the templates folder, and never overwrites" do
    dir = scratch_copy_of_app # its own: it replaces config/tasker.yml
    FileUtils.rm_f(Dir[File.join(dir, "db/migrate/*_install_tasker_core.rb")] + [File.join(dir, "config/tasker.yml")])
    FileUtils.rm_rf(File.join(dir, "config/tasker"))

    first = sh("rake", "tasker:install", dir: dir)
    File.write(File.join(dir, "config/tasker.yml"), "# edited by hand\n", mode: "a")
    second = sh("rake", "tasker:install", dir: dir)

    migrations = Dir[File.join(dir, "db/migrate/*_install_tasker_core.rb")]
    expect(migrations.size).to eq(1)
    expect(File.read(migrations.first)).to include("class InstallTaskerCore < ActiveRecord::Migration[6.1]",
                                                   "TaskerCore.migrate!")
    expect(File.read(File.join(dir, "config/tasker.yml"))).to end_with("# edited by hand\n")
    expect(File.directory?(File.join(dir, "config/tasker/templates"))).to be(true)
    expect(first.lines.map(&:split).map(&:first)).to eq(%w[create create create])
    expect(second.lines.map(&:split).map(&:first)).to eq(%w[exists exists exists])
  ensure
    FileUtils.rm_rf(dir)
  end

  it "rails g tasker:workflow writes a template that validates, handlers that load and a spec that passes" do
    output = sh("bin/rails", "g", "tasker:workflow", "refund_request", "--steps", "check_refund", "issue_refund")
    template = File.join(dir, "config/tasker/templates/refund_request.yaml")
    handlers = %w[check_refund issue_refund].map { |s| File.join(dir, "app/handlers/refund_request/#{s}_handler.rb") }

    expect(output).to include("create  config/tasker/templates/refund_request.yaml",
                              "create  app/handlers/refund_request/check_refund_handler.rb",
                              "create  spec/workflows/refund_request_spec.rb")
    expect(TaskerCore.client.register_template_yaml(File.read(template), template))
      .to eq("refund_request/refund_request@1.0.0")
    handlers.each { |file| load file }
    expect(RefundRequest::CheckRefundHandler.ancestors).to include(TaskerCore::StepHandler::Base)
    expect(RefundRequest::IssueRefundHandler.instance_method(:call).arity).to eq(3)

    spec_run = sh("rspec", "spec/workflows/refund_request_spec.rb")
    expect(spec_run).to include("1 example, 0 failures")
  end

  it "in development, reloads a handler edited while the worker runs" do
    handler = File.join(dir, "app/handlers/fulfillment/validate_order_handler.rb")
    # The script's own database work runs in executor units, as a request's
    # would: a connection this thread kept checked out would make the
    # reload wait for it (ActiveRecord's checkout_timeout) before unloading.
    script = <<~RUBY
      runtime = TaskerCore.start(orchestrator: true, worker: { namespaces: %w[fulfillment], concurrency: 2 })
      widget = Rails.application.executor.wrap do
        Product.create!(sku: "RELOAD-\#{SecureRandom.hex(3)}", name: "w", price_cents: 100, stock: 5)
      end
      fulfil = lambda do
        task = Rails.application.executor.wrap do
          Order.place!(customer_email: "r@example.com", payment_token: "tok_visa", items: { widget => 1 })
               .fulfillment_task
        end
        task.wait(timeout: 30).step("validate_order").results.keys.sort.join(",")
      end
      puts "before: \#{fulfil.call}"
      source = File.read(#{handler.inspect})
      File.write(#{handler.inspect}, source.sub('"items" =>', '"reloaded" => true, "items" =>'))
      puts "after: \#{fulfil.call}"
      runtime.stop(timeout: 10)
    RUBY
    started = monotonic
    output = sh("bin/rails", "runner", script, env: { "RAILS_ENV" => "development" })

    expect(output).to include("before: items,order_id,total_cents", "after: items,order_id,reloaded,total_cents")
    expect(monotonic - started).to be < 15 # no reload stalled on a checked-out connection
  end

  it "lets TaskerCore.configure in an initializer beat the environment, and the environment beat tasker.yml" do
    FileUtils.mkdir_p(File.join(dir, "config/initializers"))
    File.write(File.join(dir, "config/initializers/tasker.rb"), <<~RUBY)
      TaskerCore.configure { |c| c.orchestration_poll_interval_ms = 150 }
    RUBY
    script = "puts TaskerCore.client.config.values_at('orchestration', 'worker').to_json"
    orchestration, worker = JSON.parse(sh("bin/rails", "runner", script, env: { "TASKER_WORKER_CONCURRENCY" => "5" }))

    expect(orchestration["poll_interval_ms"]).to eq(150) # tasker.yml's test section says 100
    expect(worker).to eq("namespaces" => ["fulfillment"], "concurrency" => 5, "poll_interval_ms" => 100)
  ensure
    FileUtils.rm_f(File.join(dir, "config/initializers/tasker.rb"))
  end
end
