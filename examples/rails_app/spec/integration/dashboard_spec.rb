# frozen_string_literal: true

require "rails_helper"
require "rack/mock"

# config/routes.rb mounts TaskerCore::Web at /tasker for local requests.
RSpec.describe "The tasker_core dashboard mounted at /tasker" do
  let(:app) { Rack::MockRequest.new(Rails.application) }

  it "serves the dashboard's pages under the mount point, with links that stay under it" do
    response = app.get("/tasker/templates", "REMOTE_ADDR" => "127.0.0.1")

    expect(response.status).to eq(200)
    expect(response.body).to include('data-template="fulfillment/order_fulfillment@1.0.0"',
                                     'href="/tasker/tasks?namespace=fulfillment&amp;name=order_fulfillment',
                                     'href="/tasker/assets/app.css"')
    expect(app.get("/tasker/assets/app.js", "REMOTE_ADDR" => "127.0.0.1").status).to eq(200)
  end

  it "is not there for a request from elsewhere" do
    expect(app.get("/tasker/templates", "REMOTE_ADDR" => "203.0.113.9").status).to eq(404)
  end
end
