# frozen_string_literal: true

require "json"
require "fileutils"
require "rbconfig"
require "pg"

# Shared by the bench conductor (bench/bench.rb) and every scenario process:
# paths, databases, child processes, memory readings and statistics.
module Bench
  ROOT = File.expand_path("..", __dir__)
  OUT = File.join(ROOT, "target/bench")
  PARTS = File.join(OUT, "parts")
  GENERATED_TEMPLATES = File.join(OUT, "templates")
  TEMPLATE_PATHS = [File.join(ROOT, "bench/templates"), GENERATED_TEMPLATES].freeze
  ORCHESTRATOR_BIN = File.join(ROOT, "target/release/tasker-orchestrator")
  PG_ADMIN_URL = ENV.fetch("BENCH_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
  # A vhost of the bench's own: queue names (orchestration_task_requests,
  # bench_queue) are per vhost, and test suites use the default one.
  RABBITMQ_URL = ENV.fetch("BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/tasker_bench")
  NAMESPACE = "bench"
  FANOUT_WIDTH = 1000

  module_function

  def monotonic
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  def log(message)
    warn "[bench #{Time.now.strftime('%H:%M:%S')}] #{message}"
  end

  def database_url(name)
    PG_ADMIN_URL.sub(%r{/[^/?]*(\?|\z)}) { "/#{name}#{Regexp.last_match(1)}" }
  end

  # Drops and creates `name`, so a scenario starts on empty tables, queues
  # and statistics. Only the bench's own databases are ever passed here.
  def recreate_database(name)
    raise ArgumentError, "refusing to recreate #{name}: not a bench database" unless name.start_with?("tasker_bench")

    with_pg(PG_ADMIN_URL) do |conn|
      conn.exec("DROP DATABASE IF EXISTS #{conn.quote_ident(name)} WITH (FORCE)")
      conn.exec("CREATE DATABASE #{conn.quote_ident(name)}")
    end
    database_url(name)
  end

  def with_pg(url)
    conn = PG.connect(url)
    yield conn
  ensure
    conn&.close
  end

  # ---- child processes -----------------------------------------------------

  # Names a process's connections in pg_stat_activity and the server log.
  def with_application_name(url, name)
    "#{url}#{url.include?('?') ? '&' : '?'}application_name=#{name}"
  end

  def spawn_orchestrator(database_url, provider)
    raise "#{ORCHESTRATOR_BIN} is missing: run bin/setup (cargo build --release --workspace)" unless
      File.executable?(ORCHESTRATOR_BIN)

    Process.spawn({ "DATABASE_URL" => with_application_name(database_url, "bench_orchestrator"),
                    "TASKER_MESSAGING_PROVIDER" => provider.to_s, "RABBITMQ_URL" => RABBITMQ_URL,
                    "TASKER_LOG" => "warn" },
                  ORCHESTRATOR_BIN, out: File::NULL, err: $stderr)
  end

  # A worker as production runs one: `rake tasker:worker` with a boot file
  # that configures TaskerCore and loads the (noop) handlers.
  def spawn_worker(database_url, provider, concurrency:)
    env = { "DATABASE_URL" => with_application_name(database_url, "bench_worker"),
            "TASKER_MESSAGING_PROVIDER" => provider.to_s, "RABBITMQ_URL" => RABBITMQ_URL,
            "TASKER_BOOT" => File.join(ROOT, "bench/tasker_boot.rb"),
            "NAMESPACES" => NAMESPACE, "CONCURRENCY" => concurrency.to_s, "RUBYOPT" => nil }
    Process.spawn(env, "rake", "-f", File.join(ROOT, "Rakefile"), "tasker:worker", chdir: ROOT, out: File::NULL,
                                                                                   err: $stderr)
  end

  # SIGTERM, then the exit status; raises if the process does not stop.
  def stop_process(pid, name, timeout: 30)
    Process.kill("TERM", pid)
    deadline = monotonic + timeout
    loop do
      _, status = Process.wait2(pid, Process::WNOHANG)
      return status if status
      raise "#{name} (pid #{pid}) did not stop within #{timeout} s of SIGTERM" if monotonic > deadline

      sleep 0.05
    end
  end

  def stop_cleanly(pid, name)
    status = stop_process(pid, name)
    raise "#{name} exited with #{status.inspect}" unless status.success?
  end

  # ---- memory --------------------------------------------------------------

  # {rss_mb:, hwm_mb:} of a live process, from /proc/<pid>/status.
  def memory(pid)
    fields = File.read("/proc/#{pid}/status").scan(/^(VmRSS|VmHWM):\s+(\d+) kB/).to_h
    { rss_mb: fields.fetch("VmRSS").to_i / 1024.0, hwm_mb: fields.fetch("VmHWM").to_i / 1024.0 }
  end

  # CPU seconds (user + system) a process has used, from /proc/<pid>/stat.
  def cpu_seconds(pid)
    return 0.0 unless pid

    fields = File.read("/proc/#{pid}/stat").split(") ", 2).last.split
    (fields[11].to_i + fields[12].to_i) / Float(Etc.sysconf(Etc::SC_CLK_TCK))
  end

  # ---- statistics ----------------------------------------------------------

  def median(values)
    sorted = values.sort
    mid = sorted.size / 2
    sorted.size.odd? ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2.0
  end

  # Nearest-rank percentile (p in 0..100).
  def percentile(values, pct)
    sorted = values.sort
    sorted[[(pct / 100.0 * sorted.size).ceil - 1, 0].max]
  end

  def write_part(name, data)
    FileUtils.mkdir_p(PARTS)
    File.write(File.join(PARTS, "#{name}.json"), JSON.pretty_generate(data))
    log "#{name}: #{JSON.generate(data.reject { |_, v| v.is_a?(Array) && v.size > 10 })}"
  end

  def env_int(name, default)
    Integer(ENV.fetch(name, default.to_s))
  end
end

require "etc"
