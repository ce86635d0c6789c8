# frozen_string_literal: true

require "spec_helper"
require "tasker_core/web"

RSpec.describe TaskerCore::Web::Dag do
  def node(id, state = nil)
    { id: id, label: id, state: state, anchor: nil }
  end

  def layout(dag)
    dag.nodes.to_h { |n| [n.id, [n.layer, n.row]] }
  end

  it "puts each step one layer after its deepest dependency, roots first" do
    dag = described_class.new([node("start"), node("left"), node("right"), node("finish"), node("late")],
                              [%w[start left], %w[start right], %w[left finish], %w[right finish], %w[finish late],
                               %w[start late]])

    expect(layout(dag)).to eq("start" => [0, 0], "left" => [1, 0], "right" => [1, 1], "finish" => [2, 0],
                              "late" => [3, 0])
    expect(dag.width).to eq((2 * 12) + (4 * 168) + (3 * 56))
    expect(dag.height).to eq((2 * 12) + (2 * 46) + 18)
  end

  it "orders a layer by its parents' rows, so edges do not cross" do
    dag = described_class.new([node("a"), node("b"), node("from_b"), node("from_a")],
                              [%w[a from_a], %w[b from_b]])

    expect(layout(dag)).to eq("a" => [0, 0], "b" => [0, 1], "from_a" => [1, 0], "from_b" => [1, 1])
  end

  it "colours edges by whether the dependency is met, and keeps going on a cycle" do
    dag = described_class.new([node("ok", "complete"), node("bad", "error"), node("next", "pending"),
                               node("odd", "skipped"), node("x", "pending"), node("y", "pending")],
                              [%w[ok next], %w[bad next], %w[odd next], %w[next x], %w[x y], %w[y x]])

    expect(dag.edges.to_h { |e| ["#{e.from}>#{e.to}", e.state] })
      .to eq("ok>next" => "edge-done", "bad>next" => "edge-blocked", "odd>next" => "edge-done",
             "next>x" => "edge-waiting", "x>y" => "edge-waiting", "y>x" => "edge-waiting")
    expect(layout(dag).values_at("x", "y").map(&:first)).to eq([2, 2])
  end
end
