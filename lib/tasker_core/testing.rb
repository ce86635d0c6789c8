# frozen_string_literal: true

require "tasker_core"
require "tasker_core/testing/step_runner"

module TaskerCore
  # Workflows in tests without workers, orchestrators or queues.
  #
  #   require "tasker_core/testing"
  #   TaskerCore::Testing.inline!       # every create_task runs its workflow before returning
  #   TaskerCore::Testing.inline { ... } # the same, for the block
  #   TaskerCore::Testing.fake!         # tasks are created, not run ...
  #   TaskerCore::Testing.run_all       # ... until the test runs them
  #   TaskerCore::Testing.run_step(task, "charge_payment")
  #   TaskerCore::Testing.disable!      # back to workers (also disable { ... })
  #
  # Steps run in the calling thread, on ActiveRecord's connection: inside
  # the test's transaction, so transactional fixtures stay on and roll the
  # workflow back with everything else. They go through the engine's own SQL
  # functions (claim, record outcome, advance, finalize), so states,
  # results, errors, attempts and history are what production records;
  # retries run at once (backoff skipped, attempts counted). What differs:
  # no message is sent, each step is claimed from `enqueued` (no eager
  # dispatch), the history's worker is "tasker_core-testing", and handlers
  # run without configuration.around_step. Each handler runs in a savepoint
  # its own transactions nest in (as they would in a transaction of their
  # own); one that fails with a database error is rolled back, so the
  # test's transaction stays usable.
  module Testing
    MODES = %i[inline fake].freeze

    # A step the test asked to run cannot run now.
    class NotRunnableError < TaskerCore::Error; end

    class << self
      def inline!
        switch(:inline)
      end

      def fake!
        switch(:fake)
      end

      # Tasks run on workers again, as in production.
      def disable!
        switch(nil)
      end

      def inline(&block)
        with_mode(:inline, &block)
      end

      def fake(&block)
        with_mode(:fake, &block)
      end

      def disable(&block)
        with_mode(nil, &block)
      end

      def mode
        TaskerCore.test_mode
      end

      def inline?
        mode == :inline
      end

      def fake?
        mode == :fake
      end

      # Tasks created under fake! that have not been run to their end,
      # oldest first.
      def tasks
        @tasks.map { |uuid| Models::Task.find_by(task_uuid: uuid) }.compact.reject(&:finished?)
      end

      # Forgets the tasks created under fake! (the RSpec helpers do it
      # after each example; the rows themselves go with its transaction).
      def clear
        @tasks.clear
      end

      # Runs every task created under fake! to its end (and any task those
      # steps create); returns them, reloaded.
      def run_all
        ran = []
        until (pending = tasks).empty?
          pending.each { |task| ran << run_task(task) }
        end
        ran.uniq(&:task_uuid).each(&:reload)
      end

      # Runs one step of the task: it must be ready (enqueued, or waiting
      # for a retry). Returns the step, reloaded; its dependents that became
      # ready can be run next.
      def run_step(task, name)
        task = Models::Task.find(uuid_of(task))
        step = task.step(name.to_s)
        unless StepRunner::RUNNABLE.include?(step.status)
          raise NotRunnableError,
                "step #{name.inspect} of task #{task.task_uuid} (#{task.namespace}/#{task.name}) is " \
                "#{step.status}, not ready to run" + waiting_on(task, step)
        end
        StepRunner.new(task).run_step(step)
        step.reload
      end

      # Runs the task's ready steps, and those they make ready, until none
      # is left; returns the task, reloaded.
      def run_task(task)
        task = Models::Task.find(uuid_of(task))
        StepRunner.new(task).run_to_end
        task.reload
      end

      # Called by TaskerCore.create_task in test mode. Inline, a task
      # created inside a transaction of the app's runs when that transaction
      # commits, as workers would see it (within transactional fixtures, when
      # its savepoint is released); rolled back, it never runs.
      def created(task_uuid)
        case mode
        when :inline
          connection = Models::Base.connection
          return run_task(task_uuid) unless connection.transaction_open? && connection.current_transaction.joinable?

          connection.add_transaction_record(AfterCommit.new { run_task(task_uuid) })
          Models::Task.find(task_uuid)
        when :fake
          @tasks << task_uuid unless @tasks.include?(task_uuid)
          Models::Task.find(task_uuid)
        end
      end

      # Task#wait in test mode: an inline task has finished already; a
      # fake one waits for the test, so waiting for it is a mistake.
      def wait(task)
        task.reload
        return task if task.finished? || inline?

        raise TaskerCore::TimeoutError,
              "task #{task.task_uuid} is #{task.status} under TaskerCore::Testing.fake!: nothing runs it until " \
              "the test calls TaskerCore::Testing.run_all or run_step"
      end

      private

      def switch(new_mode)
        TaskerCore.test_mode = new_mode
      end

      def with_mode(new_mode)
        before = TaskerCore.test_mode
        TaskerCore.test_mode = new_mode
        yield
      ensure
        TaskerCore.test_mode = before
      end

      def uuid_of(task)
        task.respond_to?(:task_uuid) ? task.task_uuid : task.to_s
      end

      def waiting_on(task, step)
        return "" unless step.status == "pending"

        unmet = step.dependencies.reject { |d| %w[complete resolved_manually skipped].include?(d.status) }.map(&:name)
        unmet.empty? ? "" : " (waiting on #{unmet.join(', ')}; task is #{task.status})"
      end
    end

    # Runs a block when the transaction it joined commits, through the
    # hooks ActiveRecord calls on the records of a transaction.
    class AfterCommit
      def initialize(&block)
        @block = block
      end

      def trigger_transactional_callbacks?
        true
      end

      def before_committed!; end

      def committed!(should_run_callbacks: true)
        @block.call if should_run_callbacks
      end

      def rolledback!(force_restore_state: false, should_run_callbacks: true); end
    end

    @tasks = []
  end
end

require "tasker_core/testing/rspec" if defined?(RSpec) && RSpec.respond_to?(:configure)
