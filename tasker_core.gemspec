# frozen_string_literal: true

require_relative "lib/tasker_core/version"

Gem::Specification.new do |spec|
  spec.name = "tasker_core"
  spec.version = TaskerCore::VERSION
  spec.summary = "DAG workflow orchestration for Ruby and Rails, with a Rust core"
  spec.description = "Declare workflows as YAML task templates, write each step as a Ruby class that " \
                     "receives ActiveRecord models; a Rust core (PostgreSQL + PGMQ) does messaging, " \
                     "routing, retries and orchestration."
  spec.license = "MIT"
  spec.authors = ["tasker_core contributors"]
  spec.required_ruby_version = ">= 3.1"

  spec.files = Dir["lib/**/*.{rb,rake,tt,erb,css,js}", "bin/tasker-web",
                   "ext/**/*.{rb,rs,toml}", "core/**/*.{rs,sql,toml}", "Cargo.{toml,lock}",
                   # The fault suite is a workspace member: cargo reads its
                   # manifest and targets, though the gem never builds it.
                   "tests/Cargo.toml", "tests/**/*.rs",
                   "README.md", "CHANGELOG.md"]
  spec.require_paths = ["lib"]
  spec.bindir = "bin"
  spec.executables = ["tasker-web"]
  spec.extensions = ["ext/tasker_core/extconf.rb"]

  spec.add_dependency "activerecord", ">= 6.1"
  spec.add_dependency "erubi", ">= 1.9"
  spec.add_dependency "pg", ">= 1.2"
  spec.add_dependency "rack", ">= 2.2"

  spec.add_development_dependency "capybara", ">= 3.36"
  spec.add_development_dependency "puma", ">= 5.6"
  spec.add_development_dependency "rack-test", ">= 2.0"
  spec.add_development_dependency "rake", ">= 13"
  spec.add_development_dependency "rspec", ">= 3.10"
  spec.add_development_dependency "selenium-webdriver", ">= 4.4"
end
