# frozen_string_literal: true

# Loaded by TaskerCore::Railtie: Rails apps only.
namespace :tasker do
  desc "Add tasker_core to this app: a migration, config/tasker.yml, config/tasker/templates/ (never overwrites)"
  task :install do
    require "tasker_core/installer"
    version = ActiveRecord::Migration.current_version.to_s
    TaskerCore::Installer.new(Rails.root, migration_version: version).run.each { |line| puts "      #{line}" }
  end
end
