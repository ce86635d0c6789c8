# frozen_string_literal: true

require "spec_helper"
require_relative "../fixtures/handlers/limits_handlers"

# Rate limits (`rate_limit: { key:, per_second:, burst: }` on a step), end
# to end with an orchestrator and a worker of 10 threads in this process.
# Limits::Stamp records when each payout's handler started.
RSpec.describe "rate limits" do
  run_tasker_around_each(namespaces: %w[limits], concurrency: 10)

  before { Limits::Tally.reset! }

  let(:merchant) { "merchant_#{SecureRandom.hex(3)}" }

  it "starts at most 3 payouts of a merchant in any second, the others waiting for their token, none failed" do
    # 30 payouts at 3 a second (burst 3): about 10 s of work, created one
    # after the other (each commits at once: a token is taken when its step
    # becomes ready, so a transaction holding created steps back would
    # start them late, together).
    tasks = Array.new(30) do
      TaskerCore.create_task(namespace: "limits", name: "per_merchant_rate", version: "1.0.0",
                             context: { merchant: merchant })
    end
    tasks.each { |t| t.wait(timeout: 90) }
    expect(tasks.map(&:status).uniq).to eq(["complete"])
    expect(tasks.map { |t| t.step("confirm").results }.uniq).to eq([{ "confirmed_for" => merchant }])
    payouts = tasks.map { |t| t.step("payout") }
    expect(payouts.map { |p| [p.status, p.attempts] }.uniq).to eq([["complete", 1]])

    # When each handler's step was started (its started_at, the claim): no
    # 1-second window holds more than 3 (+1 for clock edges), and the 30
    # took at least the 9 s the tokens allow. (The handlers' own clocks
    # start later, by however long a Ruby thread waits for the GVL: here the
    # spec's thread holds it while it creates the tasks.)
    stamps = Limits::Tally.starts(merchant)
    expect(stamps.size).to eq(30)
    expect(stamps.all? { |claimed, ran| ran >= claimed - 0.05 }).to be(true)
    starts = stamps.map(&:first).sort
    busiest = starts.map { |t| starts.count { |u| u >= t && u < t + 1.0 } }.max
    expect(busiest).to be <= 4
    expect(starts.last - starts.first).to be >= 8.9

    # The first 3 took a free token; the others created while none was free
    # (all of them, unless creating them took longer than a token's 1 s)
    # waited for theirs, spaced 1/3 s apart, and then ran.
    bucket = "rate:limits/per_merchant_rate/payout=#{merchant}"
    waits = payouts.map { |p| p.transitions.select { |t| t.from_state == "pending" && t.to_state == "pending" } }
    expect(waits.first(3)).to eq([[], [], []])
    expect(waits.map(&:size).uniq - [0, 1]).to eq([])
    waited = waits.reject(&:empty?).map(&:first)
    expect(waited.size).to be >= 20
    untils = waited.map do |wait|
      expect(wait.metadata.keys).to eq(%w[until bucket waiting_for])
      expect(wait.metadata.slice("bucket", "waiting_for")).to eq("bucket" => bucket, "waiting_for" => "rate_limit")
      Time.iso8601(wait.metadata["until"])
    end
    expect(untils.each_cons(2).map { |a, b| b - a }.min).to be >= (1.0 / 3) - 0.001
    expect(payouts.reject.with_index { |_, i| waits[i].empty? }.map { |p| history(p.transitions) }.uniq).to eq(
      [[["", "pending"], %w[pending pending], %w[pending enqueued], %w[enqueued in_progress],
        %w[in_progress complete]]]
    )
  end
end
