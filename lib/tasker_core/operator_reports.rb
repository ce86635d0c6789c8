# frozen_string_literal: true

module TaskerCore
  # The text the operator rake tasks print.
  module OperatorReports
    module_function

    # Without a queue: each queue's dead-letter count. With one: its dead
    # letters, one per line; with replay: or discard: (an id), that action.
    def dead_letters(queue: nil, replay: nil, discard: nil)
      return dead_letter_counts if queue.nil? || queue.empty?
      return act(queue, replay, "replayed") { TaskerCore.replay_dead_letter(queue, replay) } if replay
      return act(queue, discard, "discarded") { TaskerCore.discard_dead_letter(queue, discard) } if discard

      letters = TaskerCore.dead_letters(queue, limit: 100)
      return "#{queue}: no dead letters" if letters.empty?

      letters.map { |letter| dead_letter_line(letter) }.join("\n")
    end

    def dead_letter_line(letter)
      format("%<id>-36s %<at>-25s deliveries=%<n>-3s %<reason>s\n    payload: %<payload>s",
             id: letter["id"], at: letter["dead_lettered_at"] || "-", n: letter["delivery_count"] || "?",
             reason: letter["reason"] || "(no reason kept)", payload: JSON.generate(letter["payload"]))
    end

    # rake tasker:status
    def status(status = TaskerCore.status)
      lines = ["queues:"] + status["queues"].map { |q| queue_line(q) }
      lines.concat(namespace_lines(status["namespaces"]))
      lines << "workers alive (running a step): #{status['workers'].size}"
      status["workers"].each { |w| lines << format("  %-50s steps=%d", w["worker"], w["steps_in_progress"]) }
      (lines + schedule_lines(status["schedules"]) + limit_lines(status.fetch("limits", []))).join("\n")
    end

    # Concurrency slots in use or waited for (steps or tasks waiting for a
    # limit, per slot).
    def limit_lines(limits)
      lines = limits.empty? ? ["  none in use"] : limits.map { |l| limit_line(l) }
      ["concurrency limits (in use / max, waiting):"] + lines
    end

    def limit_line(limit)
      format("  %-50s %d/%d waiting=%d", *limit.values_at("slot", "in_use", "max", "waiting"))
    end

    def schedule_lines(schedules)
      ["schedules:"] + (schedules.empty? ? ["  none"] : schedules.map { |s| schedule_line(s) })
    end

    def queue_line(queue)
      return format("  %-40s %s", queue["queue"], queue["error"]) if queue["error"]

      format("  %-40s depth=%-6d visible=%-6d oldest=%-8s dead_letters=%d", queue["queue"], queue["depth"],
             queue["visible"], age(queue["oldest_age_seconds"]), queue["dead_letters"])
    end

    def namespace_lines(namespaces)
      lines = ["namespaces (in flight):"]
      lines << "  nothing in flight" if namespaces.empty?
      namespaces.each { |n| lines.concat([namespace_line(n), priority_line(n)].compact) }
      lines
    end

    def namespace_line(counts)
      format("  %-24s tasks pending=%d in_progress=%d | steps enqueued=%d in_progress=%d waiting_for_retry=%d " \
             "stuck_in_progress=%d stuck_enqueued=%d",
             *counts.values_at("namespace", "tasks_pending", "tasks_in_progress", "steps_enqueued",
                               "steps_in_progress", "steps_waiting_for_retry", "steps_stuck_in_progress",
                               "steps_stuck_enqueued")) + limit_waits(counts)
    end

    LIMIT_WAITS = %w[steps_waiting_for_rate_limit steps_waiting_for_slot tasks_waiting_for_slot].freeze

    # What waits for a limit (rate limit tokens, concurrency slots), when
    # anything does: the counts that are not 0.
    def limit_waits(counts)
      waits = LIMIT_WAITS.map { |key| [key, counts.fetch(key, 0)] }.reject { |_, n| n.zero? }
      return "" if waits.empty?

      " | waiting for a limit: #{waits.map { |key, n| "#{key}=#{n}" }.join(' ')}"
    end

    # The enqueued steps by priority, highest first, when any is not 0.
    def priority_line(counts)
      by_priority = counts.fetch("steps_enqueued_by_priority", {}).map { |p, n| [p.to_i, n] }.sort.reverse
      return nil if by_priority.all? { |p, _| p.zero? }

      "    enqueued by priority: #{by_priority.map { |p, n| format('%+d=%d', p, n).sub('+0=', '0=') }.join(' ')}"
    end

    def schedule_line(schedule)
      format("  %-40s %-10s cron=%-18s tz=%-14s last=%-20s next=%s", *schedule.values_at("template", "schedule"),
             schedule["cron"].inspect, schedule["time_zone"], schedule["last_slot_at"] || "-",
             schedule["next_fire_at"] || "never")
    end

    # rake tasker:prune
    def prune(report = TaskerCore.prune!)
      "pruned #{report['tasks']} finished task(s) and #{report['archived_messages']} archived message(s) " \
        "in #{report['batches']} batch(es)"
    end

    def age(seconds)
      seconds.nil? ? "-" : format("%.0fs", seconds)
    end

    def dead_letter_counts
      TaskerCore.queues.map do |queue|
        format("%-40s dead letters: %d", queue, TaskerCore.dead_letter_count(queue))
      end.join("\n")
    end

    def act(queue, id, done)
      raise NotFoundError, "no dead letter #{id} in #{queue}'s dead-letter store" unless yield

      "#{done} dead letter #{id} of #{queue}"
    end
  end
end
