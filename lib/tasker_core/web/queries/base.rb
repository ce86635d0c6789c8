# frozen_string_literal: true

module TaskerCore
  class Web
    module Queries
      # Raw SQL on ActiveRecord's connection (the host app's, under Rails).
      # Times come back as epoch seconds (extract(epoch ...)) so that no
      # adapter-specific type casting is involved.
      module Sql
        private

        def connection
          Models::Base.connection
        end

        def rows(sql, *binds)
          connection.select_all(Models::Base.sanitize_sql_array([sql, *binds])).to_a
        end

        def value(sql, *binds)
          connection.select_value(Models::Base.sanitize_sql_array([sql, *binds]))
        end

        def truthy(value)
          [true, "t", "true"].include?(value)
        end

        def epoch(value)
          value.nil? ? nil : Time.at(value.to_f).utc
        end

        # The smallest UUIDv7 of a moment: task and step uuids are UUIDv7,
        # so a time range is a range of the primary key.
        def uuid_floor(time)
          ms = (time.to_f * 1000).floor
          format("%08x-%04x-0000-0000-000000000000", ms >> 16, ms & 0xffff)
        end
      end
    end
  end
end
