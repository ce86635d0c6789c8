# frozen_string_literal: true

require "tasker_core/web/queries/base"

module TaskerCore
  class Web
    module Queries
      # Every registered template version, with its DAG and input schema,
      # read from the definition the core stored when it registered it.
      class Templates
        include Sql

        Template = Struct.new(:namespace, :name, :version, :description, :definition, keyword_init: true) do
          def key
            "#{namespace}/#{name}@#{version}"
          end

          def steps
            Array(definition["steps"])
          end

          def input_schema
            definition["input_schema"]
          end

          def dag
            nodes = steps.map { |s| { id: s["name"], label: s["name"], state: nil, anchor: nil } }
            edges = steps.flat_map { |s| Array(s["dependencies"]).map { |dep| [dep, s["name"]] } }
            Dag.new(nodes, edges)
          end
        end

        def all
          templates = rows("SELECT namespace, name, version, description, definition::text AS definition " \
                           "FROM tasker_task_templates").map do |r|
            Template.new(namespace: r["namespace"], name: r["name"], version: r["version"],
                         description: r["description"], definition: JSON.parse(r["definition"]))
          end
          templates.sort_by { |t| [t.namespace, t.name, version_key(t.version)] }
        end

        private

        def version_key(version)
          Gem::Version.correct?(version) ? Gem::Version.new(version) : Gem::Version.new("0")
        end
      end
    end
  end
end
