# frozen_string_literal: true

# Builds the native extension with cargo. The rb_sys gem is not needed: the
# rb-sys crate finds Ruby through the `ruby` on PATH (bindgen needs
# libclang). Writes a Makefile whose targets RubyGems runs; the library goes
# to lib/tasker_core/tasker_core.<DLEXT>, named for this platform.
# CARGO_TARGET_DIR, when set, is where cargo builds (a warm one saves a
# from-scratch build).
require "rbconfig"
require_relative "library_name"

root = File.expand_path("../..", __dir__)
target_dir = ENV.fetch("CARGO_TARGET_DIR", File.join(root, "target"))
built = File.join(target_dir, "release", TaskerCoreLibrary.cargo_file)
dest = File.join(root, "lib", "tasker_core", TaskerCoreLibrary.ruby_file)
manifest = File.join(root, "Cargo.toml")

File.write("Makefile", <<~MAKE)
  all:
  \tcargo build --release --manifest-path #{manifest} --target-dir #{target_dir} -p tasker-core-rb
  \tcp #{built} #{dest}
  install: all
  clean:
  \tcargo clean --release --manifest-path #{manifest} --target-dir #{target_dir} -p tasker-core-rb
MAKE
