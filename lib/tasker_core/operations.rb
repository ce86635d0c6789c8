# frozen_string_literal: true

module TaskerCore
  # Metrics and health of this process, from the Rust core, and the HTTP
  # server that serves them to Prometheus and to probes.
  module Operations
    module_function

    # What the core returns, with string keys throughout (as JSON would be).
    def string_keys(value)
      case value
      when Hash then value.to_h { |k, v| [k.to_s, string_keys(v)] }
      when Array then value.map { |v| string_keys(v) }
      else value
      end
    end

    # Starts serving GET /metrics, /health/live and /health/ready on
    # host:port (port 0: any free port; #port says which). Stops when the
    # returned server is stopped or garbage-collected: keep a reference.
    def serve(host: ENV.fetch("TASKER_METRICS_HOST", "127.0.0.1"), port: ENV.fetch("TASKER_METRICS_PORT"),
              client: TaskerCore.client)
      Native::OpsServer.start(client, host.to_s, Integer(port))
    end

    # The server for `rake tasker:worker` and `rake tasker:orchestrator`:
    # started when TASKER_METRICS_PORT is set, else nil.
    def serve_from_env(client: TaskerCore.client)
      port = ENV.fetch("TASKER_METRICS_PORT", "")
      return nil if port.empty?

      server = serve(port: port, client: client)
      TaskerCore.logger.info("tasker_core serves /metrics and /health on port #{server.port}")
      server
    end
  end

  class << self
    # The Prometheus text exposition of this process's metrics (workers,
    # orchestrator, queues, pool), for a Rails app to expose itself:
    #   get "/metrics" => proc { [200, { "Content-Type" => "text/plain; version=0.0.4" }, [TaskerCore.metrics_text]] }
    def metrics_text
      Native::Ops.metrics_text(client)
    end

    # A Hash (string keys): "ready" (database and broker answer),
    # "database", "broker" ({ "ok", "latency_ms", "error" }), "queues"
    # (depth, visible, oldest_age_seconds), "components" (this process's
    # workers and orchestrators: running, in_flight, last_heartbeat_at),
    # "last_heartbeat_at", "checked_at". Probes with a 2 s timeout each.
    def health
      Operations.string_keys(Native::Ops.health(client))
    end

    # What the deployment is doing now (a Hash, string keys): "queues"
    # (depth, visible, oldest_age_seconds, dead_letters per queue),
    # "namespaces" (tasks pending and in progress; steps enqueued, in
    # progress, waiting for a retry, stuck in progress (no heartbeat for a
    # visibility timeout), stuck enqueued (longer than
    # stuck_enqueued_seconds)), "workers" (each worker running a step with
    # a fresh heartbeat, and how many), "schedules" (as TaskerCore.schedules),
    # "limits" (as TaskerCore.concurrency_limits), "checked_at".
    def status
      Operations.string_keys(Native::Ops.status(client))
    end

    # Every cron schedule that runs (of the newest version of each
    # template): an Array of Hashes with "template", "schedule", "cron",
    # "time_zone", "last_slot_at" and "next_fire_at". Also in status.
    def schedules
      Operations.string_keys(Native::Ops.schedules(client))
    end

    # Every concurrency slot in use or waited for (one key value of a
    # template's or step's `concurrency:`): an Array of Hashes with "slot"
    # ("task:<namespace>/<name>=<value>" or
    # "step:<namespace>/<name>/<step>=<value>"), "max", "in_use" and
    # "waiting" (tasks or steps waiting for it). Also in status.
    def concurrency_limits
      Operations.string_keys(Native::Ops.concurrency_limits(client))
    end

    # Deletes finished tasks older than retention.finished_tasks_days and
    # PGMQ archive rows older than retention.archive_days, in batches of
    # retention.batch_size; returns { "tasks" =>, "archived_messages" =>,
    # "batches" => }. Tasks in flight are never touched.
    def prune!
      Operations.string_keys(Native::Ops.prune(client))
    end

    # This deployment's queues: task requests and every namespace queue.
    def queues
      Native::Ops.queues(client)
    end

    # The messages `queue` dead-lettered (its dead-letter store: PGMQ's
    # archive table, RabbitMQ's <queue>.dlq), as Hashes with string keys:
    # "id", "queue", "reason", "delivery_count", "enqueued_at",
    # "dead_lettered_at", "payload". `queue` is a queue name
    # (TaskerCore.queue_name(namespace)).
    def dead_letters(queue, limit: 50)
      Operations.string_keys(Native::Ops.dead_letters(client, queue.to_s, Integer(limit)))
    end

    def dead_letter_count(queue)
      Native::Ops.dead_letter_count(client, queue.to_s)
    end

    # Sends a dead letter to its queue again (and out of the store); false
    # when there is no such dead letter.
    def replay_dead_letter(queue, id)
      Native::Ops.replay_dead_letter(client, queue.to_s, id.to_s)
    end

    # Removes a dead letter for good; false when there is no such one.
    def discard_dead_letter(queue, id)
      Native::Ops.discard_dead_letter(client, queue.to_s, id.to_s)
    end
  end
end
