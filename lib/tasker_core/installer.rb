# frozen_string_literal: true

require "fileutils"

module TaskerCore
  # What `rake tasker:install` does to a Rails app. Idempotent, and never
  # overwrites: a migration whose `up` runs TaskerCore.migrate! (unless
  # one exists already), config/tasker.yml and config/tasker/templates/
  # (unless they exist).
  class Installer
    MIGRATION_NAME = "install_tasker_core"

    MIGRATION = <<~RUBY
      # frozen_string_literal: true

      # Installs tasker_core's schema into this database: PGMQ, the engine's
      # tables (tasker_*) and its SQL functions. TaskerCore.migrate! is
      # idempotent and upgrades the schema when the gem's version changes;
      # `rake tasker:migrate` runs it too. It works on its own connection,
      # hence no DDL transaction here.
      class InstallTaskerCore < ActiveRecord::Migration[%<version>s]
        disable_ddl_transaction!

        def up
          TaskerCore.migrate!
        end

        def down
          raise ActiveRecord::IrreversibleMigration,
                "tasker_core's tables hold every task's history; drop them by hand if you mean to"
        end
      end
    RUBY

    CONFIG = <<~YAML
      # tasker_core's settings per environment (ERB allowed). Keys are those of
      # the core's configuration; an unknown key or a bad value stops the app
      # with a message naming it. Precedence: TaskerCore.configure in an
      # initializer, then the environment (TASKER_*, DATABASE_URL,
      # RABBITMQ_URL), then this file, then the defaults.
      #
      # database_url defaults to this app's ActiveRecord database (keep it
      # there: TaskerCore.create_task then joins your transactions), and
      # template_paths to config/tasker/templates.
      default: &default
        messaging:
          provider: pgmq                  # or rabbitmq (with rabbitmq_url)
          visibility_timeout_seconds: 30
          prefetch: 16                    # rabbitmq: deliveries pushed ahead of acks, per queue
          priority_aging_ms: 10000        # a step waits behind newer higher-priority ones at most (difference) x this
        worker:
          namespaces: []                  # what `rake tasker:worker` works on without NAMESPACES=
          concurrency: 4                  # keep at most database.yml's pool
          poll_interval_ms: 200
        orchestration:
          poll_interval_ms: 200
          sweep_interval_ms: 1000

      development:
        <<: *default

      test:
        <<: *default

      production:
        <<: *default
    YAML

    def initialize(root, migration_version: "6.1", now: Time.now.utc)
      @root = root.to_s
      @migration_version = migration_version
      @now = now
    end

    # Returns what it did, one line per file ("create ..." or "exists ...").
    def run
      [install_migration, install_config, install_templates_dir]
    end

    private

    def install_migration
      existing = Dir[File.join(@root, "db/migrate/*_#{MIGRATION_NAME}.rb")].first
      return "exists  #{relative(existing)}" if existing

      path = File.join(@root, "db/migrate/#{@now.strftime('%Y%m%d%H%M%S')}_#{MIGRATION_NAME}.rb")
      write(path, format(MIGRATION, version: @migration_version))
    end

    def install_config
      path = File.join(@root, "config/tasker.yml")
      File.exist?(path) ? "exists  #{relative(path)}" : write(path, CONFIG)
    end

    def install_templates_dir
      dir = File.join(@root, "config/tasker/templates")
      return "exists  #{relative(dir)}/" if File.directory?(dir)

      write(File.join(dir, ".keep"), "")
      "create  #{relative(dir)}/"
    end

    def write(path, content)
      FileUtils.mkdir_p(File.dirname(path))
      File.write(path, content)
      "create  #{relative(path)}"
    end

    def relative(path)
      path.delete_prefix("#{@root}/")
    end
  end
end
