# frozen_string_literal: true

module TaskerCore
  module Models
    class Task < Base
      self.table_name = "tasker_tasks"
      self.primary_key = "task_uuid"

      FINISHED = %w[complete error cancelled].freeze

      # In the template's order; a fan-out step's children (at its
      # position) right after it, by index. (Written so that ActiveRecord
      # can reverse it, for `last`.)
      has_many :workflow_steps, -> { order(:position, Arel.sql("fan_out_index IS NOT NULL"), :fan_out_index) },
               class_name: "TaskerCore::Models::WorkflowStep", foreign_key: :task_uuid, inverse_of: :task
      has_many :transitions, -> { order(:sort_key) },
               class_name: "TaskerCore::Models::TaskTransition", foreign_key: :task_uuid, inverse_of: :task

      def complete?
        status == "complete"
      end

      def finished?
        FINISHED.include?(status)
      end

      # Blocks until the task is complete, error or cancelled (the GVL is
      # released while waiting, so other threads run), then reloads it
      # (from the row its end notification carried, when it did).
      # Raises TaskerCore::TimeoutError after `timeout` seconds.
      def wait(timeout: 30)
        # Test mode: the task ran (or waits for the test) in this
        # connection's transaction, where the engine's own pool cannot see it.
        return TaskerCore::Testing.wait(self) if TaskerCore.test_mode

        deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
        loop do
          left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
          begin
            # Short slices keep the thread responsive to Thread#raise/kill.
            _status, row = TaskerCore.client.wait_for_task(task_uuid, [left, 0.5].min.clamp(0, nil))
            return row ? refresh_from(JSON.parse(row)) : reload
          rescue TaskerCore::TimeoutError
            raise if left <= 0.5
          end
        end
      end

      # The end notification carried the task's row: the model takes it as
      # ActiveRecord's `reload` takes the row it reads (the same steps:
      # fresh attributes, associations and change tracking forgotten),
      # without the query, which was a fifth of an idle task's wait.
      def refresh_from(row)
        @attributes = self.class.instantiate(row).instance_variable_get(:@attributes)
        @association_cache = {}
        @mutations_before_last_save = nil
        @mutations_from_database = nil
        @new_record = false
        @previously_new_record = false
        self
      end
      private :refresh_from

      def step(name)
        workflow_steps.find { |s| s.name == name } or
          raise NotFoundError, "task #{task_uuid} (#{namespace}/#{self.name}) has no step #{name.inspect}"
      end
    end
  end
end
