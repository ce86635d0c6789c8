# frozen_string_literal: true

require "active_record"

module TaskerCore
  module Models
    # The engine's tables, read through ActiveRecord. They are read-only:
    # state changes go through the core (SQL functions with row locks and
    # transition history), never through model saves.
    class Base < ActiveRecord::Base
      self.abstract_class = true

      def readonly?
        true
      end

      # Uses the application's connection when it has one (Rails); else
      # connects ActiveRecord::Base to the tasker database, so handlers can
      # use their own models in a plain Ruby process too.
      def self.ensure_connection!(database_url, pool:)
        handler = ActiveRecord::Base.connection_handler
        return if handler.retrieve_connection_pool(ActiveRecord::Base.connection_specification_name)

        ActiveRecord::Base.establish_connection("#{database_url}#{database_url.include?('?') ? '&' : '?'}pool=#{pool}")
      end
    end
  end
end
