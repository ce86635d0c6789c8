# frozen_string_literal: true

# The tasker_core dashboard at /tasker, for operators only. This shop has no
# users, so the constraint lets in requests from this machine, and anyone
# with the basic-auth credentials when TASKER_WEB_USER / TASKER_WEB_PASSWORD
# are set. An app with Devise writes instead:
#   authenticate :user, ->(user) { user.admin? } do
#     mount TaskerCore::Web => "/tasker"
#   end
# and any other app a constraint on its own session, e.g.
#   constraints(->(request) { User.find_by(id: request.session[:user_id])&.admin? }) { ... }
Rails.application.routes.draw do
  user = ENV.fetch("TASKER_WEB_USER", "")
  password = ENV.fetch("TASKER_WEB_PASSWORD", "")
  dashboard = if user.empty? || password.empty?
                TaskerCore::Web
              else
                Rack::Auth::Basic.new(TaskerCore::Web, "tasker_core") do |given_user, given_password|
                  ActiveSupport::SecurityUtils.secure_compare(given_user, user) &
                    ActiveSupport::SecurityUtils.secure_compare(given_password, password)
                end
              end
  constraints(->(request) { request.local? || !dashboard.equal?(TaskerCore::Web) }) do
    mount dashboard => "/tasker"
  end
end
