# frozen_string_literal: true

module TaskerCore
  module Models
    class WorkflowStep < Base
      self.table_name = "tasker_workflow_steps"
      self.primary_key = "step_uuid"

      belongs_to :task, class_name: "TaskerCore::Models::Task", foreign_key: :task_uuid, inverse_of: :workflow_steps
      belongs_to :named_step, class_name: "TaskerCore::Models::NamedStep"
      has_many :transitions, -> { order(:sort_key) },
               class_name: "TaskerCore::Models::WorkflowStepTransition", foreign_key: :step_uuid, inverse_of: :step
      has_many :incoming_edges, class_name: "TaskerCore::Models::WorkflowStepEdge", foreign_key: :to_step_uuid
      # In the template's order (by position), whatever plan reads the edges.
      has_many :dependencies, -> { order(:position) }, through: :incoming_edges, source: :from_step

      def complete?
        status == "complete"
      end

      # A decision step did not choose it (or every step it depends on was
      # skipped): it never runs. Terminal, like complete.
      def skipped?
        status == "skipped"
      end

      # Whether its template declares it a decision point (decision: true).
      def decision?
        named_step.decision
      end

      # A child of a fan-out step (`<step>[<index>]`): `input` is its
      # element of the fan-out step's result array, `fan_out_index` its
      # index there.
      def fan_out_child?
        !fan_out_index.nil?
      end
    end

    # A step of a registered template, as every task of that template
    # runs it: its handler and the settings its template declares.
    class NamedStep < Base
      self.table_name = "tasker_named_steps"
      self.primary_key = "named_step_id"
    end

    class WorkflowStepEdge < Base
      self.table_name = "tasker_workflow_step_edges"
      self.primary_key = nil

      belongs_to :from_step, class_name: "TaskerCore::Models::WorkflowStep", foreign_key: :from_step_uuid
      belongs_to :to_step, class_name: "TaskerCore::Models::WorkflowStep", foreign_key: :to_step_uuid
    end
  end
end
