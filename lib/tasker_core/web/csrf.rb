# frozen_string_literal: true

module TaskerCore
  class Web
    # Every POST must carry the token the page was rendered with. The token
    # lives in the session when the host app has one (Rails), else in a
    # SameSite=Strict, HttpOnly cookie of the dashboard's own (the
    # double-submit pattern: another site can neither read it nor send it).
    class Csrf
      FIELD = "authenticity_token"
      COOKIE = "tasker_web_csrf"
      SESSION_KEY = "tasker_web.csrf"

      def initialize(request)
        @request = request
        @session = request.env["rack.session"]
        @token = stored_token
        @issued = false
      end

      def token
        @token ||= SecureRandom.urlsafe_base64(32).tap do |fresh|
          @issued = true
          @session[SESSION_KEY] = fresh if @session
        end
      end

      def valid?
        given = @request.POST[FIELD].to_s
        !@token.to_s.empty? && given.bytesize == @token.bytesize && Rack::Utils.secure_compare(given, @token)
      rescue EOFError, ArgumentError
        false
      end

      # Sets the cookie on the response when a new token was issued.
      def persist(headers)
        return unless @issued && !@session

        Rack::Utils.set_cookie_header!(headers, COOKIE,
                                       value: @token, path: cookie_path, httponly: true, same_site: :strict)
      end

      private

      def stored_token
        @session ? @session[SESSION_KEY] : @request.cookies[COOKIE]
      end

      def cookie_path
        @request.script_name.to_s.empty? ? "/" : @request.script_name
      end
    end
  end
end
