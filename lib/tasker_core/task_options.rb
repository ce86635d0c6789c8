# frozen_string_literal: true

module TaskerCore
  # The options of TaskerCore.create_task beyond the template and context
  # (run_at:, delay:, timeout_seconds:, priority:), checked before anything
  # is created.
  module TaskOptions
    KEYS = %i[run_at delay timeout_seconds priority].freeze
    PRIORITIES = (-5..5)

    module_function

    # { run_at: Time } or { delay_seconds: Float } (the database's clock
    # adds a delay, so a skewed app clock does not shift it),
    # { timeout_seconds: Integer } and { priority: Integer }, for
    # SqlFunctions.create_task.
    def check!(options)
      unknown = options.keys - KEYS
      raise ArgumentError, "unknown keyword#{'s' if unknown.size > 1}: #{unknown.join(', ')}" unless unknown.empty?

      { timeout_seconds: timeout_seconds(options[:timeout_seconds]), priority: priority(options[:priority]) }
        .merge(when_due(options[:run_at], options[:delay])).compact
    end

    # -5..5, higher runs first; nil leaves the template's (else 0).
    def priority(value)
      return nil if value.nil?
      return value if value.is_a?(Integer) && PRIORITIES.cover?(value)

      raise ValidationError, "priority must be a whole number from #{PRIORITIES.min} to #{PRIORITIES.max} " \
                             "(higher runs first), got #{value.inspect}"
    end

    def timeout_seconds(value)
      return nil if value.nil?
      return value if value.is_a?(Integer) && value.between?(1, (2**31) - 1)

      raise ValidationError, "timeout_seconds must be a whole number of seconds, at least 1, got #{value.inspect}"
    end

    def when_due(run_at, delay)
      raise ValidationError, "give run_at or delay, not both" if run_at && delay
      return { delay_seconds: delay_seconds(delay) } if delay
      return {} if run_at.nil?

      # (ActiveSupport::TimeWithZone says it is a Time; a String is not
      # one, though ActiveSupport gives it to_time.)
      time = run_at.is_a?(Time) || run_at.is_a?(DateTime)
      raise ValidationError, "run_at must be a Time, got #{run_at.inspect}" unless time

      { run_at: run_at.to_time }
    end

    def delay_seconds(delay)
      duration = defined?(ActiveSupport::Duration) && delay.is_a?(ActiveSupport::Duration)
      seconds = (delay.is_a?(Numeric) && delay.real?) || duration ? delay.to_f : Float::NAN
      return seconds if seconds.finite? && seconds >= 0

      raise ValidationError,
            "delay must be a number of seconds (or an ActiveSupport::Duration), at least 0, got #{delay.inspect}"
    end
  end
end
