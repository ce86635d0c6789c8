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

    # This step's input: a fan-out child's element of its fan-out step's
    # result array (nil for a template's own step).
    def input
      step.input
    end

    # The results of the children of fan-out step `step_name`, in the order
    # of its result array (what a join of the fan-out reads; [] when the
    # array was empty). One query, however many children.
    def results_of_fan_out(step_name)
      name = step_name.to_s
      of_task = Models::WorkflowStep.where(task_uuid: task.task_uuid)
      unless @steps ? @steps.key?(name) : of_task.exists?(name: name)
        raise NotFoundError,
              "step #{step.name.inspect} asked for the fan-out results of #{name.inspect}, " \
              "which is not a step of #{task.namespace}/#{task.name}@#{task.version}"
      end
      of_task.where.not(fan_out_index: nil)
             .where("name LIKE ?", "#{Models::WorkflowStep.sanitize_sql_like(name)}[%")
             .order(:fan_out_index).pluck(:results)
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
