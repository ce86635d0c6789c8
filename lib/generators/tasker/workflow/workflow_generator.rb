# frozen_string_literal: true

require "rails/generators/named_base"

module TaskerCore
  module Generators
    # rails g tasker:workflow NAME [--namespace=NS] [--steps=a b c] [--version=1.0.0]
    #
    # Writes config/tasker/templates/NAME.yaml (the steps in a row), one
    # handler class per step in app/handlers/NS/ (each passes on what it
    # received, so the workflow runs as generated) and
    # spec/workflows/NAME_spec.rb, which runs the workflow end to end.
    class WorkflowGenerator < ::Rails::Generators::NamedBase
      namespace "tasker:workflow"
      source_root File.expand_path("templates", __dir__)
      desc "Add a tasker_core workflow: a task template, a handler per step and a spec"

      class_option :namespace, type: :string, desc: "The template's namespace (default: NAME)"
      class_option :steps, type: :array, default: %w[start finish], desc: "Step names, run in this order"
      class_option :template_version, type: :string, default: "1.0.0", desc: "The template's version"

      def check_names
        [workflow_namespace, *steps].each do |identifier|
          next if identifier.match?(/\A[a-z][a-z0-9_]*\z/)

          raise Thor::Error, "#{identifier.inspect} is not a valid name: use lower case letters, digits and _"
        end
        raise Thor::Error, "step names must be unique: #{steps.join(', ')}" if steps.uniq.size != steps.size
      end

      def create_template
        template "workflow.yaml.tt", "config/tasker/templates/#{file_name}.yaml"
      end

      def create_handlers
        steps.each_with_index do |step, index|
          @step = step
          @previous_step = index.zero? ? nil : steps[index - 1]
          template "handler.rb.tt", "app/handlers/#{workflow_namespace}/#{step}_handler.rb"
        end
      end

      def create_spec
        template "workflow_spec.rb.tt", "spec/workflows/#{file_name}_spec.rb"
      end

      private

      def workflow_namespace
        options[:namespace] || file_name
      end

      def steps
        options[:steps].map(&:to_s)
      end

      def template_version
        options[:template_version]
      end

      def handler_class(step)
        "#{workflow_namespace.camelize}::#{step.camelize}Handler"
      end
    end
  end
end
