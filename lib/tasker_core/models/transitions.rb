# frozen_string_literal: true

module TaskerCore
  module Models
    class TaskTransition < Base
      self.table_name = "tasker_task_transitions"

      belongs_to :task, class_name: "TaskerCore::Models::Task", foreign_key: :task_uuid, inverse_of: :transitions
    end

    class WorkflowStepTransition < Base
      self.table_name = "tasker_workflow_step_transitions"

      belongs_to :step, class_name: "TaskerCore::Models::WorkflowStep", foreign_key: :step_uuid,
                        inverse_of: :transitions
    end
  end
end
