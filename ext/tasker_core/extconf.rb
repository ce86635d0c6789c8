# frozen_string_literal: true

# Builds the native extension with cargo. The rb_sys gem is not needed: the
# rb-sys crate finds Ruby through the `ruby` on PATH (bindgen needs
# libclang). Writes a Makefile whose targets RubyGems runs.
require "rbconfig"

root = File.expand_path("../..", __dir__)
dlext = RbConfig::CONFIG["DLEXT"]
built = File.join(root, "target", "release", "libtasker_core.so")
dest = File.join(root, "lib", "tasker_core", "tasker_core.#{dlext}")

File.write("Makefile", <<~MAKE)
  all:
  \tcargo build --release --manifest-path #{File.join(root, 'Cargo.toml')} -p tasker-core-rb
  \tcp #{built} #{dest}
  install: all
  clean:
  \tcargo clean --manifest-path #{File.join(root, 'Cargo.toml')} -p tasker-core-rb
MAKE
