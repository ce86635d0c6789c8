# frozen_string_literal: true

require "spec_helper"

# Whatever a handler does, its step ends in a recorded outcome, the worker
# keeps `concurrency` living threads, and the step's slot is freed. The
# worker here has one slot: a task that follows each misbehaving one
# completes only if that slot came back. Each example starts its own
# runtime (nothing shared between examples but the templates).
RSpec.describe "a handler that misbehaves" do
  around do |example|
    @runtime = TaskerCore.start(orchestrator: true, worker: { namespaces: %w[misbehave], concurrency: 1 })
    example.run
  ensure
    @runtime&.stop(timeout: 10)
  end

  def create(mode, name: "act")
    TaskerCore.create_task(namespace: "misbehave", name: name, version: "1.0.0", context: { mode: mode })
  end

  def run_mode(mode)
    create(mode).wait(timeout: 30)
  end

  def outcome_of(task)
    step = task.step("act")
    [task.status, step.status, step.attempts, step.last_error&.slice("class", "message", "attempt")]
  end

  # The worker has its one thread, and its one slot runs the next task.
  def expect_worker_serving(replaced: 0)
    worker = @runtime.worker
    state = -> { [worker.alive_threads, worker.threads_replaced, worker.running?] }
    # A killed thread reports its step on the way out, then is replaced: the
    # task may finish a moment before the new thread starts.
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 5
    sleep 0.01 until state.call == [1, replaced, true] || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
    expect(state.call).to eq([1, replaced, true])
    following = run_mode("ok")
    expect([following.status, following.step("act").results]).to eq(["complete", { "ok" => true }])
  end

  def failed(klass, message)
    ["error", "error", 1, { "class" => klass, "message" => message, "attempt" => 1 }]
  end

  not_json = "which is not a JSON value (use a Hash, Array, String, Integer, Float, true, false or nil)"
  {
    "object" => "the result of step act holds an Object at $.made, #{not_json}",
    "proc" => "the result of step act holds a Proc at $[1], #{not_json}",
    "invalid_utf8" => "the result of step act holds a string that is not valid UTF-8 at $.text",
    "deep" => "the result of step act is nested more than 100 levels deep",
    "nan" => "the result of step act holds NaN at $.x, which JSON cannot represent",
    "infinity" => "the result of step act holds -Infinity at $.list[1], which JSON cannot represent",
    "integer_key" => "the result of step act has an Integer key at $; JSON object keys are strings"
  }.each do |mode, message|
    it "records a result JSON cannot hold (#{mode}) as a permanent failure naming the path" do
      task = run_mode(mode)
      expect(outcome_of(task)).to eq(failed("TaskerCore::ValidationError", message))
      expect(task.step("act").last_error["retryable"]).to be(false)
      expect_worker_serving
    end
  end

  {
    "exception" => ["Exception", "a plain Exception"],
    "missing_library" => ["LoadError", "cannot load such file -- tasker_core_missing_optional_library"],
    "stack" => ["SystemStackError", "stack level too deep"],
    "exit" => %w[SystemExit exit],
    "throw" => ["UncaughtThrowError", "uncaught throw :nowhere"],
    "binary_message" => ["Misbehave::Act::BinaryMessage", "bad byte \uFFFD here"]
  }.each do |mode, (klass, message)|
    it "records what the handler raised (#{mode}: #{klass}) and keeps the thread" do
      task = run_mode(mode)
      expect(outcome_of(task)).to eq(failed(klass, message))
      expect(task.step("act").last_error["backtrace"].first).to include("misbehave_handlers.rb")
      expect_worker_serving
    end
  end

  it "records a handler that kills its own thread, and replaces the thread" do
    task = run_mode("kill")
    expect(outcome_of(task)).to eq(failed("TaskerCore::HandlerAbortedError",
                                          "the handler's thread was killed before the handler returned"))
    expect(history(task.step("act").transitions))
      .to eq([["", "pending"], %w[pending enqueued], %w[enqueued in_progress], %w[in_progress error]])
    expect_worker_serving(replaced: 1)
  end

  it "records a huge error message cut to 4096 characters" do
    task = run_mode("huge_message")
    expect(outcome_of(task))
      .to eq(failed("TaskerCore::PermanentError", "#{'x' * 4096}... (995904 more characters)"))
    expect_worker_serving
  end

  it "clamps an absurd retry_after (1e30 s) to 30 days instead of failing to schedule the retry" do
    task = create("huge_retry_after", name: "retry_later")
    step = task.step("act")
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 10
    sleep 0.02 until step.reload.status == "waiting_for_retry" ||
                     Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

    expect([task.reload.status, step.status, step.attempts]).to eq(%w[in_progress waiting_for_retry] + [1])
    expect(step.last_error.slice("class", "message", "retryable"))
      .to eq("class" => "TaskerCore::RetryableError", "message" => "come back much later", "retryable" => true)
    expect(step.retry_at).to be_within(60).of(Time.now + (30 * 24 * 3600))
    expect_worker_serving
  ensure
    TaskerCore.cancel_task(task) if task
  end
end

RSpec.describe "a context JSON cannot hold" do
  def create(context)
    TaskerCore.create_task(namespace: "misbehave", name: "act", version: "1.0.0", context: context)
  end

  it "is refused at create_task, naming the path, before anything is stored" do
    prefix = "the context of a misbehave/act@1.0.0 task"
    expect { create({ "mode" => "ok", "ratio" => Float::NAN }) }
      .to raise_error(TaskerCore::ValidationError, "#{prefix} holds NaN at $.ratio, which JSON cannot represent")
    expect { create({ "items" => [{ "price" => Float::INFINITY }] }) }
      .to raise_error(TaskerCore::ValidationError,
                      "#{prefix} holds Infinity at $.items[0].price, which JSON cannot represent")
    expect { create({ "deep" => Array.new(150).inject([]) { |inner, _| [inner] } }) }
      .to raise_error(TaskerCore::ValidationError, "#{prefix} is nested more than 100 levels deep")
    expect { create({ "at" => Time.at(0) }) }
      .to raise_error(TaskerCore::ValidationError, /\A#{prefix} holds a Time at \$\.at, which is not a JSON value/)
  end
end
