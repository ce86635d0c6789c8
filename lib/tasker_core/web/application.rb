# frozen_string_literal: true

module TaskerCore
  class Web
    # The Rack entry point: route, refuse what must be refused (an unknown
    # path, any POST in read-only mode or without the CSRF token), run the
    # action on a pooled ActiveRecord connection, add security headers.
    class Application
      SECURITY_HEADERS = {
        # No inline script or style anywhere in the dashboard: even markup
        # that slipped through escaping could not run.
        "content-security-policy" => "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " \
                                     "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; " \
                                     "base-uri 'none'",
        "x-content-type-options" => "nosniff",
        "x-frame-options" => "DENY",
        "referrer-policy" => "same-origin"
      }.freeze

      def call(env)
        request = Rack::Request.new(env)
        csrf = Csrf.new(request)
        status, headers, body = dispatch(request, csrf)
        headers = SECURITY_HEADERS.merge(headers)
        csrf.persist(headers)
        [status, headers, body]
      end

      private

      def dispatch(request, csrf)
        TaskerCore.client # connects ActiveRecord when the app has not
        Models::Base.connection_pool.with_connection do
          actions = Actions.new(request, csrf)
          match = Router.match(request.request_method, request.path_info)
          next actions.not_found unless match
          next refuse("The dashboard is read-only.") if request.post? && Web.read_only?
          next refuse("Missing or wrong CSRF token: reload the page and try again.") if request.post? && !csrf.valid?

          actions.public_send(match.action, *match.captures)
        end
      end

      def refuse(message)
        [403, { "content-type" => "text/plain; charset=utf-8" }, [message]]
      end
    end
  end
end
