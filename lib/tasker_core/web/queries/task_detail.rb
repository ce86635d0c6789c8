# frozen_string_literal: true

module TaskerCore
  class Web
    module Queries
      # One task with its steps, edges and both histories (by sort_key).
      # A dynamic fan-out can give a task thousands of steps: of each
      # fan-out's children only the first CHILDREN_SHOWN are shown, and any
      # other that is not complete (one that failed, one running), at most
      # STEPS_SHOWN steps in all; `hidden_steps` counts the rest.
      class TaskDetail
        CHILDREN_SHOWN = 50
        STEPS_SHOWN = 2000

        attr_reader :task, :steps, :edges, :task_transitions, :hidden_steps

        def self.find(task_uuid)
          task = Models::Task.find_by(task_uuid: task_uuid.downcase)
          task && new(task)
        end

        def initialize(task)
          @task = task
          of_task = Models::WorkflowStep.where(task_uuid: task.task_uuid)
          @steps = of_task.where("fan_out_index IS NULL OR fan_out_index < ? OR status <> 'complete'", CHILDREN_SHOWN)
                          .order(:position, Arel.sql("fan_out_index NULLS FIRST")).limit(STEPS_SHOWN).to_a
          @hidden_steps = @steps.size < CHILDREN_SHOWN ? 0 : of_task.count - @steps.size
          @edges = Models::WorkflowStepEdge.where(task_uuid: task.task_uuid, to_step_uuid: @steps.map(&:step_uuid))
                                           .pluck(:from_step_uuid, :to_step_uuid)
          @task_transitions = Models::TaskTransition.where(task_uuid: task.task_uuid).order(:sort_key).to_a
        end

        def step_transitions
          @step_transitions ||= Models::WorkflowStepTransition.where(step_uuid: @steps.map(&:step_uuid))
                                                              .order(:step_uuid, :sort_key).group_by(&:step_uuid)
        end

        # The names of the step's dependencies shown, and how many others.
        def dependencies_of(step)
          parents = parents_by_step.fetch(step.step_uuid, [])
          names = parents.filter_map { |from| rows_by_uuid[from] }.sort.map { |row| @steps[row].name }
          names.size < parents.size ? names + ["#{parents.size - names.size} more not shown"] : names
        end

        # Each shown step's row in @steps (the page's order).
        def rows_by_uuid
          @rows_by_uuid ||= @steps.each_with_index.to_h { |s, i| [s.step_uuid, i] }
        end

        def parents_by_step
          @parents_by_step ||= @edges.group_by(&:last).transform_values { |pairs| pairs.map(&:first) }
        end
        private :rows_by_uuid, :parents_by_step

        def dag
          Dag.new(@steps.map { |s| { id: s.step_uuid, label: s.name, state: s.status, anchor: "step-#{s.name}" } },
                  @edges)
        end

        def finished?
          @task.finished?
        end
      end
    end
  end
end
