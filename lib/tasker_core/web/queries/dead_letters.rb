# frozen_string_literal: true

require "tasker_core/web/queries/base"
require "tasker_core/web/queries/queues"

module TaskerCore
  class Web
    module Queries
      # Messages the engine could not process. The core dead-letters a
      # message it cannot process (a poison message, one delivered more
      # than messaging.max_receive_count times): PGMQ keeps it in the
      # queue's archive table (pgmq.a_<queue>) with the reason in the row's
      # headers, RabbitMQ in <queue>.dlq. For a PGMQ message archived
      # without a reason (by hand, or before reasons were kept) the reason
      # shown is worked out again from the payload, the way the core
      # decodes it.
      class DeadLetters
        include Sql

        LIMIT = 50
        STEP_MESSAGE_FIELDS = %w[task_uuid step_uuid correlation_id].freeze

        Letter = Struct.new(:queue, :id, :read_count, :enqueued_at, :archived_at, :payload, :kept_reason,
                            keyword_init: true) do
          def reason
            kept_reason || DeadLetters.reason_for(payload)
          end
        end
        Box = Struct.new(:queue, :total, :letters, :error, keyword_init: true)

        def self.for_provider(provider)
          provider.to_sym == :pgmq ? PgmqArchive.new : RabbitDlq.new
        end

        # Why the core could not decode this payload as a step message.
        def self.reason_for(payload)
          return "not a JSON object" unless payload.is_a?(Hash)

          missing = STEP_MESSAGE_FIELDS.reject { |f| payload.key?(f) }
          return "not a step message: missing #{missing.join(', ')}" unless missing.empty?

          bad = STEP_MESSAGE_FIELDS.reject { |f| TaskList::UUID_FORMAT.match?(payload[f].to_s) }
          return "not a step message: #{bad.join(', ')} not a UUID" unless bad.empty?

          "dead-lettered by hand (the payload is a well-formed step message)"
        end

        def queues
          @queues ||= Queues.new
        end

        # PGMQ: the archive table, read and changed with SQL in one
        # transaction each, so a replay sends and removes atomically.
        class PgmqArchive < DeadLetters
          def lists_messages?
            true
          end

          def boxes
            queues.names.keys.map do |queue|
              table = archive(queue)
              letters = rows("SELECT msg_id, read_ct, extract(epoch FROM enqueued_at) AS enqueued_at, " \
                             "extract(epoch FROM archived_at) AS archived_at, message::text AS message, " \
                             "headers->>'x-tasker-dead-letter-reason' AS kept_reason " \
                             "FROM #{table} ORDER BY msg_id DESC LIMIT #{LIMIT}").map { |r| letter(queue, r) }
              Box.new(queue: queue, total: value("SELECT count(*) FROM #{table}").to_i, letters: letters)
            rescue ActiveRecord::StatementInvalid => e
              Box.new(queue: queue, total: 0, letters: [], error: e.message.lines.first.strip)
            end
          end

          # Sends the archived message to its queue again and removes it
          # from the archive, in one transaction. False when it is gone.
          def replay(queue, id)
            sql = Models::Base.sanitize_sql_array(
              ["WITH moved AS (DELETE FROM #{archive(queue)} WHERE msg_id = ? RETURNING message) " \
               "SELECT pgmq.send(?, message) FROM moved", id.to_i, queue]
            )
            connection.transaction { connection.select_values(sql).size == 1 }
          end

          def discard(queue, id)
            connection.delete(Models::Base.sanitize_sql_array(["DELETE FROM #{archive(queue)} WHERE msg_id = ?",
                                                               id.to_i])) == 1
          end

          def discard_all(queue)
            connection.delete("DELETE FROM #{archive(queue)}")
          end

          private

          # Only a queue the engine knows, quoted as an identifier.
          def archive(queue)
            raise NotFoundError, "no queue named #{queue}" unless queues.known?(queue)

            "pgmq.#{connection.quote_column_name("a_#{queue}")}"
          end

          def letter(queue, row)
            payload = begin
              JSON.parse(row["message"].to_s)
            rescue JSON::ParserError
              row["message"]
            end
            Letter.new(queue: queue, id: row["msg_id"].to_i, read_count: row["read_ct"].to_i,
                       enqueued_at: epoch(row["enqueued_at"]), archived_at: epoch(row["archived_at"]),
                       payload: payload, kept_reason: row["kept_reason"])
          end
        end

        # RabbitMQ: <queue>.dlq. The message service counts and purges a
        # queue; reading a message without taking it off the queue, and its
        # x-death reason, need the native provider (not there yet), so the
        # page shows counts and offers to discard.
        class RabbitDlq < DeadLetters
          def lists_messages?
            false
          end

          def boxes(message_service = TaskerCore.message_service)
            queues.names.keys.map do |queue|
              Box.new(queue: queue, total: message_service.stats("#{queue}.dlq")[:depth].to_i, letters: [])
            rescue TaskerCore::Error => e
              Box.new(queue: queue, total: 0, letters: [], error: e.message)
            end
          end

          def discard_all(queue, message_service = TaskerCore.message_service)
            raise NotFoundError, "no queue named #{queue}" unless queues.known?(queue)

            message_service.purge_queue("#{queue}.dlq")
          end
        end
      end
    end
  end
end
