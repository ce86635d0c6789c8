# frozen_string_literal: true

module TaskerCore
  # What rake tasker:templates:validate and tasker:templates:list print.
  module TemplateCheck
    module_function

    # Checks every template file below the configured template_paths, each
    # on its own, without connecting to the database (for CI). Returns
    # [lines, ok?].
    def validate
      results = Native::Client.check_templates(TaskerCore.configuration.file_settings,
                                               TaskerCore.configuration.to_native)
      return [["no template files found under template_paths"], false] if results.empty?

      lines = results.map { |path, key, error| error ? "invalid #{path}: #{error}" : "ok      #{path}: #{key}" }
      bad = results.count { |_, _, error| error }
      lines << if bad.zero?
                 "#{results.size} template file(s) valid"
               else
                 "#{bad} of #{results.size} template file(s) invalid"
               end
      [lines, bad.zero?]
    end

    # The templates registered in the database: key, active steps, when
    # last registered.
    def list
      TaskerCore.client # connects ActiveRecord outside Rails
      rows = Models::Base.connection.select_all(<<~SQL).to_a
        SELECT t.namespace || '/' || t.name || '@' || t.version AS key,
               (SELECT count(*) FROM tasker_named_steps s WHERE s.template_id = t.template_id AND s.active) AS steps,
               to_char(t.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS updated_at
          FROM tasker_task_templates t ORDER BY t.namespace, t.name, t.version
      SQL
      return ["no templates registered (rake tasker:migrate registers template_paths)"] if rows.empty?

      width = rows.map { |r| r["key"].size }.max
      rows.map { |r| format("%-#{width}s  %2d step(s)  registered %s UTC", r["key"], r["steps"], r["updated_at"]) }
    end
  end
end
