# frozen_string_literal: true

module TaskerCore
  module StepHandler
    # Finds a step's handler class and builds the handler with the step's
    # settings. The worker and the test mode both build handlers here.
    module Resolver
      module_function

      # Resolved on every run, never cached: in a Rails app in development
      # the autoloader replaces the class when its file changes, and a cached
      # class object would keep running the old code.
      def handler_class(callable)
        klass = Object.const_get(callable)
        return klass if klass.method_defined?(:call)

        raise TemplateError, "handler #{callable} does not define call(task, sequence, step)"
      rescue NameError => e
        raise TemplateError, "handler class #{callable} cannot be found: #{e.message}"
      end

      # A handler for one run. `config` (the step's handler.initialization)
      # goes to `initialize(config)` when the class takes an argument; a
      # class whose initialize takes none is built without it.
      def build(callable, config)
        klass = handler_class(callable)
        config = deep_freeze(config || {})
        klass.instance_method(:initialize).arity.zero? ? klass.new : klass.new(config)
      end

      def deep_freeze(value)
        case value
        when Hash then value.each_value { |v| deep_freeze(v) }
        when Array then value.each { |v| deep_freeze(v) }
        end
        value.freeze
      end
    end
  end
end
