# frozen_string_literal: true

module TaskerCore
  class Web
    # A layered (Sugiyama-style) layout of a DAG, computed on the server:
    # each node's layer is the length of the longest path from a root, and
    # nodes within a layer are ordered by the mean position of their
    # parents, which keeps most edges from crossing. The view draws it as
    # SVG, left to right.
    class Dag
      NODE_W = 168
      NODE_H = 46
      GAP_X = 56
      GAP_Y = 18
      PAD = 12
      LABEL_MAX = 22

      Node = Struct.new(:id, :label, :state, :anchor, :layer, :row, :x, :y, keyword_init: true) do
        def short_label
          label.length > LABEL_MAX ? "#{label[0, LABEL_MAX - 1]}…" : label
        end
      end
      Edge = Struct.new(:from, :to, :state, :path, keyword_init: true)

      DONE = %w[complete resolved_manually skipped].freeze
      BLOCKED = %w[error cancelled].freeze

      attr_reader :nodes, :edges, :width, :height

      # nodes: [{id:, label:, state:, anchor:}] in a stable order (position);
      # edges: [[from_id, to_id]].
      def initialize(nodes, edges)
        @nodes = nodes.map { |n| Node.new(**n) }
        @by_id = @nodes.to_h { |n| [n.id, n] }
        @pairs = edges.select { |from, to| @by_id[from] && @by_id[to] }
        assign_layers
        order_layers
        place
        @edges = @pairs.map { |from, to| edge(@by_id[from], @by_id[to]) }
      end

      private

      def parents_of
        @parents_of ||= @pairs.group_by(&:last).transform_values { |pairs| pairs.map(&:first) }
      end

      def children_of
        @children_of ||= @pairs.group_by(&:first).transform_values { |pairs| pairs.map(&:last) }
      end

      # Longest path from a root, in topological order (Kahn). Nodes left
      # over (a cycle, which templates refuse) go after the deepest layer.
      def assign_layers
        layer, waiting = longest_paths
        deepest = @nodes.reject { |n| waiting[n.id].positive? }.map { |n| layer[n.id] }.max || 0
        @nodes.each { |n| n.layer = waiting[n.id].positive? ? deepest + 1 : layer[n.id] }
      end

      # [layer by id, parents not yet visited by id]
      def longest_paths
        waiting = Hash.new(0)
        @pairs.each { |_, to| waiting[to] += 1 }
        layer = Hash.new(0)
        queue = @nodes.map(&:id).select { |id| waiting[id].zero? }
        while (id = queue.shift)
          children_of.fetch(id, []).each do |child|
            layer[child] = [layer[child], layer[id] + 1].max
            waiting[child] -= 1
            queue << child if waiting[child].zero?
          end
        end
        [layer, waiting]
      end

      # Two sweeps down the layers, each ordering a layer by the mean row of
      # its nodes' parents (the barycenter heuristic).
      def order_layers
        @layers = @nodes.group_by(&:layer).sort.map(&:last)
        @layers.each { |nodes| nodes.each_with_index { |n, i| n.row = i } }
        2.times { @layers.drop(1).each { |nodes| reorder(nodes) } }
      end

      def reorder(nodes)
        ranked = nodes.each_with_index.sort_by { |n, i| [barycenter(n) || i, i] }
        ranked.each_with_index { |(n, _), row| n.row = row }
        nodes.sort_by!(&:row)
      end

      def barycenter(node)
        rows = parents_of.fetch(node.id, []).map { |p| @by_id[p].row }
        rows.empty? ? nil : rows.sum.fdiv(rows.size)
      end

      def place
        tallest = @layers.map(&:size).max || 0
        @layers.each do |nodes|
          offset = (tallest - nodes.size) * (NODE_H + GAP_Y) / 2.0
          nodes.each do |n|
            n.x = PAD + (n.layer * (NODE_W + GAP_X))
            n.y = PAD + offset + (n.row * (NODE_H + GAP_Y))
          end
        end
        @width = span(@layers.size, NODE_W, GAP_X)
        @height = span(tallest, NODE_H, GAP_Y)
      end

      def span(count, size, gap)
        (PAD * 2) + (count * size) + ([count - 1, 0].max * gap)
      end

      def edge(from, to)
        x1 = from.x + NODE_W
        y1 = from.y + (NODE_H / 2.0)
        x2 = to.x
        y2 = to.y + (NODE_H / 2.0)
        mid = (x1 + x2) / 2.0
        Edge.new(from: from.id, to: to.id, state: edge_state(from.state),
                 path: format("M%.1f %.1f C%.1f %.1f, %.1f %.1f, %.1f %.1f", x1, y1, mid, y1, mid, y2, x2 - 6, y2))
      end

      def edge_state(state)
        return "edge-done" if DONE.include?(state)
        return "edge-blocked" if BLOCKED.include?(state)

        state.nil? ? "edge-plain" : "edge-waiting"
      end
    end
  end
end
