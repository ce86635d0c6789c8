# frozen_string_literal: true

module TaskerCore
  class Web
    # Renders the ERB templates in views/. Erubi's escape mode escapes every
    # `<%= %>`; `<%== %>` (raw) is used only for markup the views build
    # themselves (partials, the CSRF field).
    class View
      include Helpers

      DIR = File.expand_path("views", __dir__)

      Dir[File.join(DIR, "*.erb")].each do |path|
        name = File.basename(path, ".erb")
        source = Erubi::Engine.new(File.read(path), escape: true, freeze_template_literals: false).src
        # Compiled once; errors point at the template's own lines.
        class_eval("def template_#{name}(locals)\n#{source}\nend", path, 0) # rubocop:disable Style/EvalWithLocation
      end

      attr_reader :request, :title, :alert

      def initialize(request:, csrf:, **assigns)
        @request = request
        @csrf = csrf
        assigns.each { |name, value| instance_variable_set("@#{name}", value) }
      end

      # The page in the layout.
      def page(name, title:)
        @title = title
        @content = send("template_#{name}", {})
        template_layout({})
      end

      def partial(name, **locals)
        send("template__#{name}", locals)
      end

      def read_only?
        Web.read_only?
      end

      # A path inside the dashboard, wherever it is mounted.
      def url(path, params = {})
        query = params.compact.reject { |_, v| v.to_s.empty? }
        "#{request.script_name}#{path}#{query.empty? ? '' : "?#{Rack::Utils.build_query(query)}"}"
      end

      def current?(path)
        path == "/" ? request.path_info.to_s.sub(%r{/\z}, "").empty? : request.path_info.to_s.start_with?(path)
      end

      def csrf_token
        @csrf.token
      end

      def csrf_field
        %(<input type="hidden" name="#{Csrf::FIELD}" value="#{h csrf_token}">)
      end

      # Success messages arrive as a code after a redirect, never as text a
      # link could make up; failures are rendered directly (alert).
      def notice
        Actions::NOTICES[request.GET["notice"]]
      end
    end
  end
end
