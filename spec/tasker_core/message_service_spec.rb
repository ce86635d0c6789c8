# frozen_string_literal: true

require "spec_helper"

RSpec.describe TaskerCore::MessageService do
  subject(:service) { TaskerCore.message_service }

  let(:queue) { unique_name("rbq") }

  # Receives until `count` messages arrived: RabbitMQ pushes deliveries to
  # consumers, so a message sent a moment ago can take a moment to arrive.
  def receive_all(count, deadline: Time.now + 10)
    got = []
    got.concat(service.receive(queue, max: count - got.size)) while got.size < count && Time.now < deadline
    got
  end

  before { service.create_queue(queue) }
  after { service.delete_queue(queue) }

  it "round-trips a JSON payload through the Rust core" do
    expect(service.send_message(queue, { order_id: 42, "items" => [1, 2.5, nil], "ok" => true })).to be_an(Integer)
    messages = receive_all(1)

    expect(service.provider).to eq(SPEC_PROVIDER)
    expect(messages.size).to eq(1)
    expect(messages.first.to_h).to include(queue: queue, delivery_count: 1,
                                           payload: { "order_id" => 42, "items" => [1, 2.5, nil], "ok" => true })
    expect(service.receive(queue, max: 10)).to eq([]) # in flight: invisible to others

    service.ack(queue, messages.first.receipt)
    expect(service.stats(queue)).to include(depth: 0, visible: 0)
  end

  it "redelivers a nacked message and counts deliveries" do
    service.send_batch(queue, [{ "n" => 1 }, { "n" => 2 }])
    first = receive_all(1).first
    service.nack(queue, first.receipt)
    again = receive_all(2)

    # Order after a nack is not promised (RabbitMQ may have pushed 2 first).
    expect(again.map { |m| [m.payload["n"], m.delivery_count] }.sort).to eq([[1, 2], [2, 1]])
    again.each { |m| service.nack(queue, m.receipt) }
    expect(service.purge_queue(queue)).to eq(2)
  end

  it "raises TaskerCore::MessagingError for a queue that does not exist" do
    expect { service.send_message(unique_name("nowhere"), {}) }
      .to raise_error(TaskerCore::MessagingError, /sending to queue nowhere_/)
  end

  it "keeps a poison message out of the queue without losing it" do
    service.send_message(queue, { "bad" => true })
    poison = receive_all(1).first
    service.dead_letter(queue, poison.receipt)
    expect(service.stats(queue)).to include(depth: 0, visible: 0)
  end
end
