# frozen_string_literal: true

# This example lives inside the tasker_core repository and runs without
# Bundler: tasker_core from the repository's lib/ (with its native
# extension built there by bin/setup), every other gem from the system.
# An app that uses Bundler has `require "bundler/setup"` here instead.
$LOAD_PATH.unshift(File.expand_path("../../../lib", __dir__))
