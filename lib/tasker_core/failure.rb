# frozen_string_literal: true

module TaskerCore
  # What the worker records of an exception a handler raised: its class,
  # message and backtrace as valid UTF-8 (invalid bytes replaced), each cut
  # to a bounded size, so that whatever was raised can be recorded.
  module Failure
    MAX_MESSAGE = 4096
    MAX_LINE = 500
    MAX_LINES = 50

    module_function

    # The hash Native::Worker#fail takes.
    def of(error, retryable:, retry_after: nil)
      {
        "error_class" => text(error.class.name || error.class.inspect, 200),
        "message" => text(message_of(error), MAX_MESSAGE),
        "backtrace" => Array(error.backtrace).first(MAX_LINES).map { |line| text(line, MAX_LINE) },
        "retryable" => retryable,
        "retry_after_seconds" => (retry_after.to_f if retry_after.is_a?(Numeric))
      }
    end

    def message_of(error)
      error.message
    rescue Exception => e # rubocop:disable Lint/RescueException
      "(the error's message could not be read: #{e.class})"
    end

    def text(value, limit)
      value = value.to_s
      value = if [Encoding::UTF_8, Encoding::BINARY, Encoding::US_ASCII].include?(value.encoding)
                value.dup.force_encoding(Encoding::UTF_8).scrub("\uFFFD")
              else
                value.encode(Encoding::UTF_8, invalid: :replace, undef: :replace)
              end
      value.length > limit ? "#{value[0, limit]}... (#{value.length - limit} more characters)" : value
    end
  end
end
