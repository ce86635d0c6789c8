# frozen_string_literal: true

module TaskerCore
  # What the handler of a decision step (`decision: true` in the template)
  # returns: the names of the step's dependents to run. The others, and
  # every step that can then no longer run (all of whose dependencies were
  # skipped), end `skipped`; a step with a dependency that ran and the rest
  # skipped runs, so a join after two branches runs after whichever ran.
  #
  #   class Shipping::ChooseCarrier < TaskerCore::StepHandler::Base
  #     def call(task, _sequence, _step)
  #       TaskerCore::Decision.new(run: task.context["express"] ? %w[ship_by_courier] : %w[ship_by_post])
  #     end
  #   end
  #
  # The step's recorded result is {"run" => [...]} (what
  # `sequence.result_of` returns to its dependents). An empty `run` skips
  # every dependent. Naming a step that is not a dependent fails the
  # decision step for good, as does returning anything but a Decision from
  # a decision step (or a Decision from a step that is not one).
  class Decision
    attr_reader :run

    # Raises DecisionError unless `run` is an Array of step names (Strings
    # or Symbols).
    def initialize(run:)
      unless run.is_a?(Array) && run.all? { |name| name.is_a?(String) || name.is_a?(Symbol) }
        raise DecisionError, "TaskerCore::Decision.new(run:) takes an Array of step names, got #{run.inspect}"
      end

      @run = run.map(&:to_s).uniq.freeze
      freeze
    end

    # The step's result as it is recorded.
    def to_h
      { "run" => run.dup }
    end

    # Decision.result_of for a worker's job: the claim says whether the
    # step is a decision (its named step's), its task row (JSON text) names
    # the template.
    def self.result_of_job(value, job)
      decision = job[:decision] == true
      return value unless decision || value.is_a?(Decision)

      template = JSON.parse(job.fetch(:task)).values_at("namespace", "name", "version")
      result_of(value, decision: decision,
                       step: "#{job[:step_name]} of template #{template[0]}/#{template[1]}@#{template[2]}")
    end

    # What a worker records of a handler's return value `value`: a Decision
    # from a decision step as its Hash, any value from another step as it
    # is. Raises DecisionError (a PermanentError) naming `step` (its name
    # and template) for a decision step that returned anything else, or a
    # step that is not one that returned a Decision.
    def self.result_of(value, decision:, step:)
      if value.is_a?(Decision)
        return value.to_h if decision

        raise DecisionError, "step #{step} returned a TaskerCore::Decision but is not a decision " \
                             "(declare decision: true on it in the template)"
      end
      return value unless decision

      raise DecisionError, "decision step #{step} returned #{value.inspect[0, 200]}, not a TaskerCore::Decision " \
                           "(return TaskerCore::Decision.new(run: [names of its dependents to run]))"
    end

    def ==(other)
      other.is_a?(Decision) && other.run == run
    end
    alias eql? ==

    def hash
      run.hash
    end
  end
end
