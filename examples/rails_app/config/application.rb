# frozen_string_literal: true

require_relative "boot"

require "rails"
require "active_model/railtie"
require "active_record/railtie"
require "action_controller/railtie" # routes, to mount the dashboard (config/routes.rb)
require "tasker_core"
require "tasker_core/web"

module Shop
  # A small shop: orders of products, fulfilled by a tasker_core workflow
  # (config/tasker/templates/order_fulfillment.yaml) whose handlers live in
  # app/handlers/fulfillment and work on the app's own models.
  class Application < Rails::Application
    config.load_defaults 6.1
    config.generators { |g| g.test_framework nil }
  end
end
