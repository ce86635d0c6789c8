# frozen_string_literal: true

module TaskerCore
  # Queue operations on the configured provider (PGMQ by default). Payloads
  # are JSON objects; `receive` returns messages that stay invisible to
  # other receivers until acked, nacked, or `visibility_timeout` passes.
  class MessageService
    Message = Struct.new(:queue, :receipt, :delivery_count, :payload, keyword_init: true)

    def initialize(client = TaskerCore.client)
      @native = Native::MessageService.new(client)
    end

    def provider
      @native.provider.to_sym
    end

    def create_queue(queue)
      @native.create_queue(queue.to_s)
    end

    def delete_queue(queue)
      @native.delete_queue(queue.to_s)
    end

    # Returns how many messages were removed.
    def purge_queue(queue)
      @native.purge_queue(queue.to_s)
    end

    # Returns the message's receipt.
    def send_message(queue, payload)
      @native.send_message(queue.to_s, payload)
    end

    def send_batch(queue, payloads)
      @native.send_batch(queue.to_s, payloads)
    end

    def receive(queue, max: 1, visibility_timeout: 30)
      @native.receive(queue.to_s, max, visibility_timeout.to_f).map do |m|
        Message.new(queue: m["queue"], receipt: m["receipt"], delivery_count: m["delivery_count"],
                    payload: m["payload"])
      end
    end

    def ack(queue, receipt)
      @native.ack(queue.to_s, receipt)
    end

    # Makes the message visible again after `delay` seconds.
    def nack(queue, receipt, delay: 0)
      @native.nack(queue.to_s, receipt, delay.to_f)
    end

    # Takes a message that can never be processed out of the queue and keeps
    # it for inspection (PGMQ: the queue's archive; RabbitMQ: <queue>.dlq),
    # with `reason` beside it when given (see TaskerCore.dead_letters).
    def dead_letter(queue, receipt, reason: nil)
      return @native.dead_letter(queue.to_s, receipt) if reason.nil?

      @native.dead_letter_because(queue.to_s, receipt, reason.to_s)
    end

    # {queue:, depth:, visible:, total_sent: (nil where unknown), oldest_age_seconds:}
    def stats(queue)
      @native.stats(queue.to_s)
    end

    # Closes this client's connection to the broker (RabbitMQ; nothing to do
    # for PGMQ): messages it received or was sent ahead (prefetched) and did
    # not settle go back to their queues at once, for other consumers. The
    # next call connects again. For a process that stops its worker and goes
    # on, or replaces its client (TaskerCore.configure after use).
    def close
      @native.close
    end
  end
end
