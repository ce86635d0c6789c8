# frozen_string_literal: true

require "json"

module TaskerCore
  module Testing
    # Included in every example group by require "tasker_core/testing".
    module RSpecHelpers
      # Creates a task and runs its workflow to the end in this thread (the
      # inline mode, whatever mode is on); returns the task. version: the
      # newest registered when not given.
      def run_workflow(namespace:, name:, version: nil, context: {}, identity_key: nil)
        version ||= Testing.newest_version(namespace, name)
        Testing.inline do
          TaskerCore.create_task(namespace: namespace, name: name, version: version, context: context,
                                 identity_key: identity_key)
        end
      end

      # expect(task).to have_step("charge_payment")
      #   .with_result("charge_id" => 7)        # the recorded result (== or a matcher)
      #   .failed_with(TaskerCore::PermanentError, /declined/) # in error, with this class (and message)
      #   .in_state("pending").with_attempts(1)
      def have_step(name)
        StepMatcher.new(name)
      end
    end

    # The matcher behind have_step. Reads the task's steps afresh, so it
    # sees what ran after the task was loaded.
    class StepMatcher
      include ::RSpec::Matchers::Composable

      def initialize(name)
        @name = name.to_s
        @expectations = []
      end

      def with_result(expected)
        @expectations << [:result, expected]
        self
      end

      def failed_with(error_class, message = nil)
        @expectations << [:error, error_class, message]
        self
      end

      def in_state(state)
        @expectations << [:state, state.to_s]
        self
      end

      def with_attempts(count)
        @expectations << [:attempts, count]
        self
      end

      def matches?(task)
        @task = task
        @step = Models::WorkflowStep.find_by(task_uuid: task.task_uuid, name: @name)
        @problems = @step ? @expectations.filter_map { |e| problem(*e) } : []
        !@step.nil? && @problems.empty?
      end

      def failure_message
        return "expected task #{@task.task_uuid} to have a step #{@name.inspect}; its steps: #{names}" unless @step

        "expected step #{@name.inspect} of task #{@task.task_uuid} (#{@task.reload.status}) " \
          "#{@problems.join('; ')}"
      end

      def failure_message_when_negated
        "expected task #{@task.task_uuid} not to have a step #{@name.inspect}#{description_suffix}"
      end

      def description
        "have step #{@name.inspect}#{description_suffix}"
      end

      private

      def problem(kind, expected, message = nil)
        case kind
        when :result then result_problem(expected)
        when :state
          "to be #{expected}, but it is #{@step.status}" unless @step.status == expected
        when :attempts
          "to have run #{expected} attempt(s), got #{@step.attempts}" unless @step.attempts == expected
        when :error then error_problem(expected, message)
        end
      end

      # A Hash or Array is compared as JSON stores it (string keys).
      def result_problem(expected)
        want = plain?(expected) ? JSON.parse(JSON.generate(expected)) : expected
        "to have result #{show(expected)}, got #{@step.results.inspect}" unless values_match?(want, @step.results)
      end

      def error_problem(error_class, message)
        error = @step.last_error || {}
        return if failed_with?(error, error_class, message)

        wanted = message.nil? ? error_class.name : "#{error_class.name} (#{show(message)})"
        "to have failed for good with #{wanted}, but it is #{@step.status} with " \
          "#{error['class'] || 'no error'}: #{error['message'].inspect}"
      end

      def failed_with?(error, error_class, message)
        @step.status == "error" && error["class"] == error_class.name &&
          (message.nil? || values_match?(message, error["message"]))
      end

      def plain?(value)
        value.is_a?(Hash) || value.is_a?(Array) || value.is_a?(Symbol)
      end

      def show(value)
        value.respond_to?(:description) ? value.description : value.inspect
      end

      def names
        Models::WorkflowStep.where(task_uuid: @task.task_uuid).order(:position).pluck(:name).join(", ")
      end

      def description_suffix
        @expectations.map { |kind, value, _| " #{kind} #{show(value)}" }.join
      end
    end

    class << self
      # The newest registered version of a template.
      def newest_version(namespace, name)
        sql = Models::Base.sanitize_sql_array(
          ["SELECT version FROM tasker_task_templates WHERE namespace = ? AND name = ?", namespace.to_s, name.to_s]
        )
        versions = Models::Base.connection.select_values(sql)
        raise NotFoundError, "no task template #{namespace}/#{name} is registered" if versions.empty?

        versions.max_by { |v| Gem::Version.new(v) }
      end
    end
  end
end

RSpec.configure do |config|
  config.include TaskerCore::Testing::RSpecHelpers
  # tasker: :inline, :fake or :real on an example or group runs it in that
  # mode, whatever the suite's default.
  config.around(:each, :tasker) do |example|
    mode = example.metadata[:tasker]
    unless %i[inline fake real].include?(mode)
      raise ArgumentError, "tasker: must be :inline, :fake or :real, got #{mode.inspect}"
    end

    TaskerCore::Testing.send(mode == :real ? :disable : mode) { example.run }
  end
  config.after { TaskerCore::Testing.clear }
end
