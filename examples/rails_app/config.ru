# frozen_string_literal: true

# `bin/rails server`: the shop serves the tasker_core dashboard at /tasker
# (config/routes.rb).
require_relative "config/environment"
run Rails.application
