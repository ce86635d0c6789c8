# frozen_string_literal: true

# Rake tasks for running tasker_core. In Rails they load the app first
# (`environment`); elsewhere set TASKER_BOOT to a Ruby file that configures
# TaskerCore and loads the handlers.
#   rake tasker:worker NAMESPACES=fulfillment,billing CONCURRENCY=8
#   rake tasker:orchestrator
#   rake tasker:status
#   rake tasker:prune
#   rake tasker:dead_letters [QUEUE=x_queue [REPLAY=id | DISCARD=id]]
#   rake tasker:web          # the dashboard (TaskerCore::Web) on 127.0.0.1:9292
#   rake tasker:templates:validate   # every template file, no database (CI)
#   rake tasker:templates:list       # the templates registered in the database
# NAMESPACES and CONCURRENCY default to worker.namespaces and
# worker.concurrency of the configuration (config/tasker.yml in Rails).

namespace :tasker do
  task :boot do
    Rake::Task["environment"].invoke if Rake::Task.task_defined?("environment")
    require ENV["TASKER_BOOT"] if ENV["TASKER_BOOT"]
    require "tasker_core"
  end

  desc "Run a worker (NAMESPACES, CONCURRENCY); stops cleanly on SIGTERM/SIGINT"
  task worker: :boot do
    configured = TaskerCore.client.config["worker"]
    namespaces = ENV["NAMESPACES"]&.split(",") || configured["namespaces"]
    if namespaces.empty?
      raise TaskerCore::ConfigurationError,
            "no namespaces to work on: set NAMESPACES=a,b (or worker.namespaces in config/tasker.yml)"
    end

    concurrency = Integer(ENV.fetch("CONCURRENCY", configured["concurrency"]))
    TaskerCore::Launcher.run(worker: { namespaces: namespaces, concurrency: concurrency }, orchestrator: false)
  end

  desc "Run an orchestrator; stops cleanly on SIGTERM/SIGINT"
  task orchestrator: :boot do
    TaskerCore::Launcher.run(orchestrator: true, worker: nil)
  end

  desc "Print queues (depth, age, dead letters), tasks and steps in flight per namespace, stuck steps, live workers"
  task status: :boot do
    puts TaskerCore::OperatorReports.status
  end

  desc "Delete finished tasks and PGMQ archive rows past their retention (retention.* in config/tasker.yml)"
  task prune: :boot do
    puts TaskerCore::OperatorReports.prune
  end

  desc "List dead letters (QUEUE=name for one queue's messages; with REPLAY=id or DISCARD=id, act on one)"
  task dead_letters: :boot do
    puts TaskerCore::OperatorReports.dead_letters(queue: ENV.fetch("QUEUE", nil), replay: ENV.fetch("REPLAY", nil),
                                                  discard: ENV.fetch("DISCARD", nil))
  end

  desc "Install or upgrade tasker_core's schema (PGMQ, tables, SQL functions) and register the templates"
  task migrate: :boot do
    TaskerCore.migrate!
    keys = TaskerCore.register_templates!
    puts "tasker_core schema is current in #{TaskerCore.client.config['database_url']}; " \
         "#{keys.size} template(s) registered"
  end

  namespace :templates do
    desc "Validate every template file under template_paths without touching the database (for CI)"
    task validate: :boot do
      lines, ok = TaskerCore::TemplateCheck.validate
      puts lines
      exit(1) unless ok
    end

    desc "List the templates registered in the database"
    task list: :boot do
      puts TaskerCore::TemplateCheck.list
    end
  end

  desc "Serve the dashboard (TASKER_WEB_HOST=127.0.0.1, TASKER_WEB_PORT=9292; other hosts need " \
       "TASKER_WEB_USER and TASKER_WEB_PASSWORD; TASKER_WEB_READ_ONLY=1)"
  task web: :boot do
    require "tasker_core/web/server"
    TaskerCore::Web::Server.from_env.run
  end
end
