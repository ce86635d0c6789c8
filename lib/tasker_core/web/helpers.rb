# frozen_string_literal: true

module TaskerCore
  class Web
    # Formatting for the views. Templates escape every `<%= %>` (Erubi's
    # escape mode); these helpers return plain strings, never markup, except
    # where a name says so.
    module Helpers
      KNOWN_STATES = %w[pending enqueued in_progress complete error waiting_for_retry cancelled
                        resolved_manually skipped].freeze

      def h(value)
        Rack::Utils.escape_html(value.to_s)
      end

      # A CSS class for a state; states this version does not know get a
      # neutral look rather than an error.
      def state_class(state)
        KNOWN_STATES.include?(state.to_s) ? "state-#{state}" : "state-unknown"
      end

      # An id attribute for a name such as "ns/name@1.0.0".
      def anchor_for(name)
        name.to_s.gsub(/[^A-Za-z0-9_]/, "-")
      end

      def state_label(state)
        state.to_s.tr("_", " ")
      end

      def time_text(time)
        time ? time.utc.strftime("%Y-%m-%d %H:%M:%S.%L UTC") : "-"
      end

      def short_time(time)
        time ? time.utc.strftime("%H:%M:%S") : "-"
      end

      def ago(time, now: Time.now)
        time ? "#{duration_text(now - time)} ago" : "-"
      end

      def duration_text(seconds)
        return "-" unless seconds

        seconds = seconds.to_f
        return format("%.0f ms", seconds * 1000) if seconds < 1
        return format("%.1f s", seconds) if seconds < 60
        return format("%dm %02ds", seconds / 60, seconds % 60) if seconds < 3600

        format("%dh %02dm", seconds / 3600, (seconds % 3600) / 60)
      end

      def between(from, to)
        from && to ? duration_text(to - from) : "-"
      end

      def json_text(value)
        return "null" if value.nil?

        JSON.pretty_generate(value)
      rescue JSON::GeneratorError
        value.inspect
      end

      def number(value)
        value.to_i.to_s.reverse.scan(/\d{1,3}/).join(",").reverse.then { |s| value.to_i.negative? ? "-#{s}" : s }
      end
    end
  end
end
