# frozen_string_literal: true

require "rails/railtie"
require "erb"
require "active_record/database_configurations"

module TaskerCore
  # Wires tasker_core into a Rails app:
  # - reads config/tasker.yml (ERB, keyed by Rails.env) as the file layer of
  #   the configuration, with template_paths defaulting to
  #   config/tasker/templates and the database to the app's ActiveRecord
  #   database; TaskerCore.configure in an initializer still wins;
  # - runs every step inside the app's reloader (an executor unit of work:
  #   connections returned, query cache, code reloaded when it changed),
  #   and resolves handler classes through the autoloader on every run;
  # - writes the Rust core's log events to Rails.logger;
  # - adds rake tasker:install/migrate/worker/orchestrator/status, and
  #   `db:schema:load` then installs tasker_core's schema, which schema.rb
  #   cannot hold (its tables are left out of schema.rb).
  class Railtie < ::Rails::Railtie
    ENGINE_TABLES = [/\Atasker_/, "_sqlx_migrations"].freeze

    # The Rust core's log events (see LogPump) go to the app's log; an
    # initializer may set TaskerCore.logger to something else.
    initializer "tasker_core.logger", before: :load_config_initializers do
      TaskerCore.logger = ::Rails.logger
    end

    initializer "tasker_core.configure", before: :load_config_initializers do |app|
      TaskerCore.configure do |c|
        c.file_settings = Railtie.file_settings(app)
        c.around_step ||= ->(&run) { app.reloader.wrap(&run) }
      end
    end

    initializer "tasker_core.schema_dumper" do
      ActiveSupport.on_load(:active_record) do
        ActiveRecord::SchemaDumper.ignore_tables |= TaskerCore::Railtie::ENGINE_TABLES
      end
    end

    rake_tasks do
      load File.expand_path("tasks/tasker.rake", __dir__)
      load File.expand_path("tasks/install.rake", __dir__)
      Rake::Task["db:schema:load"].enhance { Rake::Task["tasker:migrate"].invoke } if
        Rake::Task.task_defined?("db:schema:load")
    end

    class << self
      # config/tasker.yml's section for Rails.env, with the app's defaults.
      def file_settings(app, env: ::Rails.env)
        settings = ConfigFile.load(app.root.join("config/tasker.yml").to_s, env: env, root: app.root.to_s)
        settings["template_paths"] ||= [app.root.join("config/tasker/templates").to_s]
        settings["database_url"] ||= app_database_url(app, env)
        settings.compact
      end

      # The app's primary database for `env` as a postgres:// URL (after
      # DATABASE_URL, as ActiveRecord sees it), or nil without one.
      def app_database_url(app, env)
        db_config = database_config(app, env)
        return unless db_config

        hash = db_config.configuration_hash
        unless %w[postgresql postgis].include?(hash[:adapter].to_s)
          raise ConfigurationError,
                "tasker_core needs PostgreSQL, but the app's #{env} database uses #{hash[:adapter].inspect}: " \
                "set database_url in config/tasker.yml"
        end

        postgres_url(hash)
      end

      private

      def database_config(app, env)
        configurations = ActiveRecord::DatabaseConfigurations.new(app.config.database_configuration)
        configurations.configs_for(env_name: env.to_s, name: "primary") ||
          configurations.configs_for(env_name: env.to_s).first
      rescue RuntimeError, Errno::ENOENT
        nil # no config/database.yml and no DATABASE_URL
      end

      # host: a name, an address, or a Unix socket directory (libpq's
      # convention), which the core takes as ?host=/path.
      def postgres_url(hash)
        host = hash[:host].to_s
        socket = host.start_with?("/")
        url = +"postgres://#{userinfo(hash)}#{socket || host.empty? ? 'localhost' : host}"
        url << ":#{hash[:port]}" if hash[:port]
        url << "/#{ERB::Util.url_encode(hash[:database].to_s)}"
        url << "?host=#{ERB::Util.url_encode(host)}" if socket
        url
      end

      def userinfo(hash)
        parts = [hash[:username] || hash[:user], hash[:password]].compact
        parts.empty? ? "" : "#{parts.map { |v| ERB::Util.url_encode(v.to_s) }.join(':')}@"
      end
    end
  end
end
