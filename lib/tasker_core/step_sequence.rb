# frozen_string_literal: true

module TaskerCore
  # What a handler sees of the rest of its task: the other steps and their
  # results.
  class StepSequence
    attr_reader :task, :step

    def initialize(task, step)
      @task = task
      @step = step
    end

    # The recorded result of another step of this task (normally one of the
    # step's dependencies).
    def result_of(step_name)
      steps.fetch(step_name.to_s) do
        raise NotFoundError,
              "step #{step.name.inspect} asked for the result of #{step_name.to_s.inspect}, " \
              "which is not a step of #{task.namespace}/#{task.name}@#{task.version}"
      end.results
    end

    # The step's direct dependencies, in template order.
    def dependencies
      @dependencies ||= step.dependencies.order(:position).to_a
    end

    def steps
      @steps ||= task.workflow_steps.index_by(&:name)
    end
  end
end
