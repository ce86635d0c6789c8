# frozen_string_literal: true

module TaskerCore
  class Web
    # One method per route: reads what the page needs and renders it, or
    # performs an operator action through the public API and redirects.
    class Actions
      NOTICES = {
        "cancelled" => "Task cancelled.",
        "not_cancelled" => "The task had already finished; nothing was cancelled.",
        "retried" => "Step retried: it runs again with fresh attempts.",
        "not_retried" => "The step was not in error; nothing was retried.",
        "resolved" => "Step resolved manually; its dependents run next.",
        "not_resolved" => "The step had already finished; nothing was resolved.",
        "replayed" => "Message sent to its queue again.",
        "discarded" => "Message discarded.",
        "gone" => "That message is no longer there.",
        "discarded_all" => "Dead letters discarded."
      }.freeze
      ASSETS = { "app.css" => "text/css; charset=utf-8", "app.js" => "text/javascript; charset=utf-8" }.freeze
      ASSET_DIR = File.expand_path("assets", __dir__)

      def initialize(request, csrf)
        @request = request
        @csrf = csrf
      end

      def overview
        namespace = @request.GET["namespace"].to_s.strip
        namespace = nil if namespace.empty?
        render(:overview, "Overview", overview: Queries::Overview.new(namespace: namespace),
                                      limit_waits: Queries::LimitWaits.new(namespace: namespace),
                                      queues: Queries::Queues.new(namespace: namespace).stats,
                                      namespaces: Queries::Queues.new.names.values.compact,
                                      schedules: schedules(namespace), limits: limits(namespace))
      end

      # Concurrency slots in use or waited for (of the namespace's templates,
      # when one is chosen).
      def limits(namespace)
        TaskerCore.concurrency_limits.select { |l| namespace.nil? || l["slot"].match?(%r{\A(task|step):#{namespace}/}) }
      end

      # The cron schedules that run (of the namespace, when one is chosen).
      def schedules(namespace)
        TaskerCore.schedules.select { |s| namespace.nil? || s["template"].start_with?("#{namespace}/") }
      end

      def tasks
        if (query = @request.GET["q"].to_s.strip) != ""
          found = Queries::TaskList.find(query)
          return redirect("/tasks/#{found.task_uuid}") if found

          alert = "No task has the uuid or identity key #{query}."
        end
        list = Queries::TaskList.new(@request.GET)
        render(:tasks, "Tasks", list: list, page: list.page, templates: Queries::Templates.new.all, alert: alert,
                                query: query)
      end

      def task(uuid, alert: nil, status: 200)
        detail = Queries::TaskDetail.find(uuid) or return not_found("No task #{uuid}.")
        render(:task, "Task #{detail.task.name}", status: status, detail: detail, alert: alert)
      end

      # The live part of a task page, redrawn by app.js while the task runs.
      def task_live(uuid)
        detail = Queries::TaskDetail.find(uuid) or return not_found("No task #{uuid}.")
        html(200, view(detail: detail).partial(:live, detail: detail))
      end

      def templates
        render(:templates, "Templates", templates: Queries::Templates.new.all)
      end

      def dead_letters
        store = dead_letter_store
        render(:dead_letters, "Dead letters", store: store, boxes: store.boxes, provider: provider)
      end

      def asset(name)
        [200, { "content-type" => ASSETS.fetch(name), "cache-control" => "public, max-age=300" },
         [File.read(File.join(ASSET_DIR, name))]]
      end

      def cancel_task(uuid)
        operate(uuid) { TaskerCore.cancel_task(uuid) ? "cancelled" : "not_cancelled" }
      end

      def retry_step(uuid)
        step = find_step(uuid) or return not_found("No step #{uuid}.")
        operate(step.task_uuid) { TaskerCore.retry_step(uuid) ? "retried" : "not_retried" }
      end

      def resolve_step(uuid)
        step = find_step(uuid) or return not_found("No step #{uuid}.")
        result = begin
          JSON.parse(@request.POST["result"].to_s)
        rescue JSON::ParserError => e
          return task(step.task_uuid, alert: "The result is not JSON: #{e.message}", status: 422)
        end
        operate(step.task_uuid) { TaskerCore.resolve_step_manually(uuid, result) ? "resolved" : "not_resolved" }
      end

      def replay_dead_letter(queue, id)
        dead_letter_action { |store| store.replay(queue, id) ? "replayed" : "gone" }
      end

      def discard_dead_letter(queue, id)
        dead_letter_action { |store| store.discard(queue, id) ? "discarded" : "gone" }
      end

      def discard_all_dead_letters(queue)
        dead_letter_action(needs_listing: false) do |store|
          store.discard_all(queue)
          "discarded_all"
        end
      end

      def not_found(message = "Not found.")
        render(:error, "Not found", status: 404, message: message)
      end

      private

      def operate(task_uuid)
        redirect("/tasks/#{task_uuid}", notice: yield)
      rescue TaskerCore::Error => e
        task(task_uuid, alert: e.message, status: 422)
      end

      def dead_letter_action(needs_listing: true)
        store = dead_letter_store
        if needs_listing && !store.lists_messages?
          return not_found("#{provider} dead letters cannot be replayed or discarded one by one.")
        end

        redirect("/dead_letters", notice: yield(store))
      rescue TaskerCore::Error => e
        render(:dead_letters, "Dead letters", status: 422, store: store, boxes: store.boxes, provider: provider,
                                              alert: e.message)
      end

      def dead_letter_store
        Queries::DeadLetters.for_provider(provider)
      end

      def provider
        @provider ||= TaskerCore.message_service.provider
      end

      def find_step(uuid)
        Models::WorkflowStep.select(:step_uuid, :task_uuid).find_by(step_uuid: uuid.downcase)
      end

      def view(**assigns)
        View.new(request: @request, csrf: @csrf, **assigns)
      end

      def render(template, title, status: 200, **assigns)
        html(status, view(**assigns).page(template, title: title))
      end

      def html(status, body)
        [status, { "content-type" => "text/html; charset=utf-8", "cache-control" => "no-store" }, [body]]
      end

      def redirect(path, notice: nil)
        location = "#{@request.script_name}#{path}#{notice ? "?notice=#{notice}" : ''}"
        [303, { "location" => location, "content-type" => "text/html; charset=utf-8" }, []]
      end
    end
  end
end
