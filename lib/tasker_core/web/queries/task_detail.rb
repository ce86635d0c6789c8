# frozen_string_literal: true

module TaskerCore
  class Web
    module Queries
      # One task with its steps, edges and both histories (by sort_key).
      class TaskDetail
        attr_reader :task, :steps, :edges, :task_transitions

        def self.find(task_uuid)
          task = Models::Task.find_by(task_uuid: task_uuid.downcase)
          task && new(task)
        end

        def initialize(task)
          @task = task
          @steps = Models::WorkflowStep.where(task_uuid: task.task_uuid).order(:position).to_a
          @edges = Models::WorkflowStepEdge.where(task_uuid: task.task_uuid).pluck(:from_step_uuid, :to_step_uuid)
          @task_transitions = Models::TaskTransition.where(task_uuid: task.task_uuid).order(:sort_key).to_a
        end

        def step_transitions
          @step_transitions ||= Models::WorkflowStepTransition.where(step_uuid: @steps.map(&:step_uuid))
                                                              .order(:step_uuid, :sort_key).group_by(&:step_uuid)
        end

        def dependencies_of(step)
          names = @steps.to_h { |s| [s.step_uuid, s.name] }
          @edges.select { |_, to| to == step.step_uuid }.map { |from, _| names[from] }
        end

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
