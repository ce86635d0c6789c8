# frozen_string_literal: true

Rails.application.configure do
  config.cache_classes = true
  config.eager_load = true
  config.log_level = :info
  config.logger = ActiveSupport::Logger.new($stdout)
  config.active_support.deprecation = :notify
  config.active_record.dump_schema_after_migration = false
end
