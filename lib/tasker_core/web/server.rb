# frozen_string_literal: true

require "ipaddr"
require "tasker_core/web"

module TaskerCore
  class Web
    # Runs the dashboard on its own (`rake tasker:web`, `bin/tasker-web`)
    # with Puma. It listens on 127.0.0.1 unless told otherwise, and refuses
    # any other address unless TASKER_WEB_USER and TASKER_WEB_PASSWORD are
    # set, which turn on HTTP basic auth (on loopback too, when set).
    class Server
      LOOPBACK = %w[127.0.0.1 localhost ::1].freeze

      attr_reader :host, :port

      def self.from_env(env = ENV)
        new(host: env.fetch("TASKER_WEB_HOST", "127.0.0.1"), port: Integer(env.fetch("TASKER_WEB_PORT", "9292")),
            user: env["TASKER_WEB_USER"], password: env["TASKER_WEB_PASSWORD"],
            read_only: %w[1 true yes].include?(env["TASKER_WEB_READ_ONLY"].to_s.downcase))
      end

      def initialize(host: "127.0.0.1", port: 9292, user: nil, password: nil, read_only: false)
        @host = host
        @port = port
        @user = user.to_s
        @password = password.to_s
        @read_only = read_only
        check!
      end

      def credentials?
        !@user.empty? && !@password.empty?
      end

      def loopback?
        LOOPBACK.include?(@host) || IPAddr.new(@host).loopback?
      rescue IPAddr::InvalidAddressError
        false
      end

      # The Rack app to serve: the dashboard, behind basic auth when
      # credentials are set.
      def app
        Web.read_only = true if @read_only
        return Web unless credentials?

        user = @user
        password = @password
        Rack::Auth::Basic.new(Web, "tasker_core") do |given_user, given_password|
          Rack::Utils.secure_compare(given_user.to_s, user) & Rack::Utils.secure_compare(given_password.to_s, password)
        end
      end

      def url
        "http://#{@host.include?(':') ? "[#{@host}]" : @host}:#{@port}/"
      end

      # Serves until SIGINT/SIGTERM.
      def run
        require "puma"
        require "puma/configuration"
        require "puma/launcher"
        TaskerCore.client # fail now, not on the first request, if the database is unreachable
        app = self.app
        bind = "tcp://#{@host.include?(':') ? "[#{@host}]" : @host}:#{@port}"
        config = Puma::Configuration.new do |c|
          c.bind bind
          c.app app
          c.threads 1, 5
          c.workers 0
          c.environment "production"
          c.quiet
        end
        puts "tasker_core dashboard on #{url}#{' (basic auth)' if credentials?}#{' (read-only)' if Web.read_only?}"
        Puma::Launcher.new(config, events: Puma::Events.stdio).run
      end

      private

      def check!
        return if loopback? || credentials?

        raise ConfigurationError,
              "refusing to serve the dashboard on #{@host} without authentication: set TASKER_WEB_USER and " \
              "TASKER_WEB_PASSWORD (HTTP basic auth), or listen on 127.0.0.1"
      end
    end
  end
end
