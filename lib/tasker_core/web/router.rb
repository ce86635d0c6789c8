# frozen_string_literal: true

module TaskerCore
  class Web
    # Maps a method and path to an action name and its captures.
    class Router
      UUID = "([0-9a-fA-F-]{36})"
      QUEUE = "([a-z][a-z0-9_.]{0,60})"

      ROUTES = [
        ["GET", %r{\A/?\z}, :overview],
        ["GET", %r{\A/tasks/?\z}, :tasks],
        ["GET", %r{\A/tasks/#{UUID}/?\z}, :task],
        ["GET", %r{\A/tasks/#{UUID}/live\z}, :task_live],
        ["GET", %r{\A/templates/?\z}, :templates],
        ["GET", %r{\A/dead_letters/?\z}, :dead_letters],
        ["GET", %r{\A/assets/(app\.css|app\.js)\z}, :asset],
        ["POST", %r{\A/tasks/#{UUID}/cancel\z}, :cancel_task],
        ["POST", %r{\A/steps/#{UUID}/retry\z}, :retry_step],
        ["POST", %r{\A/steps/#{UUID}/resolve\z}, :resolve_step],
        ["POST", %r{\A/dead_letters/#{QUEUE}/(\d+)/replay\z}, :replay_dead_letter],
        ["POST", %r{\A/dead_letters/#{QUEUE}/(\d+)/discard\z}, :discard_dead_letter],
        ["POST", %r{\A/dead_letters/#{QUEUE}/discard_all\z}, :discard_all_dead_letters]
      ].freeze

      Match = Struct.new(:action, :captures)

      def self.match(method, path)
        method = "GET" if method == "HEAD"
        ROUTES.each do |verb, pattern, action|
          next unless verb == method

          found = pattern.match(path)
          return Match.new(action, found.captures) if found
        end
        nil
      end
    end
  end
end
