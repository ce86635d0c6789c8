# frozen_string_literal: true

Rails.application.configure do
  # Handlers reload when their files change: the worker runs each step
  # inside the app's reloader.
  config.cache_classes = false
  config.eager_load = false
  config.active_support.deprecation = :log
end
