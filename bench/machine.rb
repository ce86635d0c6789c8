# frozen_string_literal: true

require "open3"
require_relative "support"

module Bench
  # What the figures were measured on.
  module Machine
    module_function

    # 8 kB writes each followed by fdatasync, for `seconds`, on the
    # filesystem of PostgreSQL's WAL: how many durable commits a second the
    # disk allows a single committer (PostgreSQL's group commit shares one
    # flush among concurrent committers).
    def fdatasync_per_s(dir: ENV.fetch("BENCH_FSYNC_DIR", "/var/lib/postgresql"), seconds: 2.0)
      path = File.join(File.directory?(dir) ? dir : OUT, "bench-fdatasync.tmp")
      block = "x" * 8192
      count = 0
      File.open(path, "w") do |f|
        deadline = Bench.monotonic + seconds
        while Bench.monotonic < deadline
          f.pwrite(block, 0)
          f.fdatasync
          count += 1
        end
      end
      (count / seconds).round
    ensure
      File.delete(path) if path && File.exist?(path)
    end

    def describe(sidekiq_version)
      settings = Bench.with_pg(PG_ADMIN_URL) do |conn|
        %w[fsync synchronous_commit shared_buffers autovacuum server_version].to_h do |name|
          [name, conn.exec("SHOW #{name}").getvalue(0, 0)]
        end
      end
      {
        "cpus" => Etc.nprocessors, "cpu_model" => File.read("/proc/cpuinfo")[/model name\s*:\s*(.+)/, 1],
        "memory_gb" => (File.read("/proc/meminfo")[/MemTotal:\s+(\d+)/, 1].to_i / 1024.0 / 1024).round(1),
        "postgresql" => "PostgreSQL #{settings['server_version']}", "fsync" => settings["fsync"],
        "synchronous_commit" => settings["synchronous_commit"], "shared_buffers" => settings["shared_buffers"],
        "autovacuum" => settings["autovacuum"],
        "ruby" => RUBY_VERSION, "sidekiq" => sidekiq_version,
        "redis" => command_output("redis-server", "--version")[/v=(\S+)/, 1],
        "rabbitmq" => command_output("rabbitmqctl", "-q", "version").strip,
        "git_commit" => command_output("git", "-C", ROOT, "rev-parse", "--short", "HEAD").strip
      }
    end

    def command_output(*command)
      out, status = Open3.capture2e(*command)
      status.success? ? out : "unknown"
    rescue SystemCallError
      "unknown"
    end
  end
end
