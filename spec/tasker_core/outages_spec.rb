# frozen_string_literal: true

require "spec_helper"
require "uri"
require_relative "../support/forwarder"

# Fail fast under outages (the fault suite stops PostgreSQL itself; here a
# forwarder cuts one client off): once the broker cannot be reached, its
# circuit breaker is open and sends raise UnavailableError at once; the
# breaker's own probe closes it when the broker answers again.
RSpec.describe "outages" do
  def monotonic
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  let(:rabbitmq_url) { ENV.fetch("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2f") }
  # The broker: RabbitMQ, or PostgreSQL itself with PGMQ.
  let(:broker_url) { SPEC_PROVIDER == :rabbitmq ? rabbitmq_url : TEST_DATABASE_URL }
  let(:forwarder) { Forwarder.new(URI(broker_url).host, URI(broker_url).port) }
  let(:client) do
    messaging = { "provider" => SPEC_PROVIDER.to_s }
    explicit = { "database_url" => TEST_DATABASE_URL, "messaging" => messaging }
    if SPEC_PROVIDER == :rabbitmq
      messaging["rabbitmq_url"] = forwarder.through(rabbitmq_url)
    else
      explicit["database_url"] = forwarder.through(TEST_DATABASE_URL)
    end
    TaskerCore::Native::Client.connect({}, explicit)
  end
  let(:service) { TaskerCore::MessageService.new(client) }
  let(:queue) { unique_name("outage") }

  before { service.create_queue(queue) }

  after do
    forwarder.close
    TaskerCore.message_service.delete_queue(queue)
  end

  it "raises UnavailableError at once from MessageService#send_message while the broker is cut off, and recovers" do
    expect(service.send_message(queue, { "n" => 1 })).to be_an(Integer)
    forwarder.cut
    # The first send meets the outage and opens the breaker.
    deadline = monotonic + 15
    first = nil
    until first.is_a?(TaskerCore::UnavailableError)
      begin
        service.send_message(queue, { "n" => 2 })
      rescue TaskerCore::Error => e
        first = e
      end
      raise "the breaker never opened (last: #{first.inspect})" if monotonic > deadline
    end

    started = monotonic
    errors = Array.new(10) do
      service.send_message(queue, { "n" => 3 })
    rescue TaskerCore::Error => e
      e
    end
    expect(monotonic - started).to be < 0.2
    dependency = SPEC_PROVIDER == :rabbitmq ? "broker" : "database"
    expect(errors.map(&:class).uniq).to eq([TaskerCore::UnavailableError])
    expect(errors.first.message).to start_with("the #{dependency} is unavailable (unreachable for ")
    expect(errors.first).to be_a(TaskerCore::Error)

    forwarder.heal
    deadline = monotonic + 15
    begin
      service.send_message(queue, { "n" => 4 })
    rescue TaskerCore::UnavailableError, TaskerCore::MessagingError, TaskerCore::DatabaseError
      raise if monotonic > deadline

      sleep 0.1
      retry
    end
    expect(service.stats(queue)[:depth]).to be >= 2
  end

  it "turns an unreachable ActiveRecord connection in create_task into UnavailableError" do
    refused = ActiveRecord::ConnectionNotEstablished.new('connection to server at "127.0.0.1", port 5432 failed: ' \
                                                          "Connection refused")
    allow(TaskerCore::SqlFunctions).to receive(:create_task).and_raise(refused)
    expect { TaskerCore.create_task(namespace: "held", name: "hold", version: "1.0.0", context: { order_id: 1 }) }
      .to raise_error(TaskerCore::UnavailableError,
                      'the database is unreachable: connection to server at "127.0.0.1", port 5432 failed: ' \
                      "Connection refused")
    # The database answers (only ActiveRecord was told otherwise): the
    # breaker's probe closes it again at once.
    deadline = monotonic + 5
    begin
      TaskerCore.client.check_database_available
    rescue TaskerCore::UnavailableError
      raise if monotonic > deadline

      sleep 0.02
      retry
    end
  end
end
