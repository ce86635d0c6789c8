# frozen_string_literal: true

begin
  require "tasker_core/tasker_core"
rescue LoadError => e
  raise LoadError, "tasker_core's native extension is not built (#{e.message}). " \
                   "Run bin/setup (or `rake compile`) to build it with cargo."
end
