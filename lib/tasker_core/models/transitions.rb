# frozen_string_literal: true

module TaskerCore
  module Models
    class TaskTransition < Base
      self.table_name = "tasker_task_transitions"
      # (task_uuid, sort_key): append-only, read in sort_key order.
      self.primary_key = nil

      belongs_to :task, class_name: "TaskerCore::Models::Task", foreign_key: :task_uuid, inverse_of: :transitions
    end

    class WorkflowStepTransition < Base
      self.table_name = "tasker_workflow_step_transitions"
      # (step_uuid, sort_key): append-only, read in sort_key order.
      self.primary_key = nil

      belongs_to :step, class_name: "TaskerCore::Models::WorkflowStep", foreign_key: :step_uuid,
                        inverse_of: :transitions
    end
  end
end
