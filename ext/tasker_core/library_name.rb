# frozen_string_literal: true

require "rbconfig"

# The native library's file names, from the platform: what cargo writes for
# the cdylib (libtasker_core.so, libtasker_core.dylib on macOS,
# tasker_core.dll on Windows) and what Ruby requires
# (tasker_core.<DLEXT>: .so, .bundle on macOS). Used by extconf.rb (gem
# install), the Rakefile and bin/setup.
module TaskerCoreLibrary
  module_function

  def cargo_file(host_os = RbConfig::CONFIG["host_os"])
    case host_os
    when /darwin|mac os/ then "libtasker_core.dylib"
    when /mswin|mingw|cygwin/ then "tasker_core.dll"
    else "libtasker_core.so"
    end
  end

  def ruby_file(dlext = RbConfig::CONFIG["DLEXT"])
    "tasker_core.#{dlext}"
  end
end
