# frozen_string_literal: true

require "English"
require "spec_helper"
require_relative "../../support/web"

RSpec.describe "TaskerCore::Web safety", :web do
  let(:script) { "<script>window.__xss=1</script>" }
  let(:img) { "\"><img src=x onerror=\"window.__xss=2\">" }

  context "with a worker running" do
    run_tasker_around_each(namespaces: %w[webui])

    it "escapes user data from the context, a result and an error message" do
      task = failed_diamond(note: "#{script}#{img}")

      html = page_html("/tasks/#{task.task_uuid}")

      expect(html).not_to include(script)
      expect(html).not_to include("<img")
      escaped = "&lt;script&gt;window.__xss=1&lt;/script&gt;" \
                "&quot;&gt;&lt;img src=x onerror=&quot;window.__xss=2&quot;&gt;"
      expect(html).to include("right failed: #{escaped}") # the error message
      expect(html).to include("&quot;note&quot;: &quot;&lt;script&gt;window.__xss=1") # the context and left's result
      expect(html.scan("&lt;script&gt;window.__xss=1").size).to eq(5) # context, 2 results, error, its transition
      expect(page_html("/?namespace=webui")).to include("right failed: #{escaped}")
      expect(last_response.headers["content-security-policy"]).to include("script-src 'self'")
    end
  end

  context "with nothing running" do
    it "refuses a POST without the CSRF token, or with another one, and changes nothing" do
      task = create_parked({})

      post "/tasks/#{task.task_uuid}/cancel"
      expect(last_response.status).to eq(403)
      expect(last_response.body).to include("CSRF")
      page_html("/tasks/#{task.task_uuid}") # the cookie is set now
      post "/tasks/#{task.task_uuid}/cancel", "authenticity_token" => "forged"
      expect(last_response.status).to eq(403)
      expect(task.reload.status).to eq("in_progress")

      post_with_token("/tasks/#{task.task_uuid}/cancel", from: "/tasks/#{task.task_uuid}")
      expect(last_response.status).to eq(303)
      expect(task.reload.status).to eq("cancelled")
    end

    it "keeps the token in the host app's session when there is one" do
      task = create_parked({})
      session = {}
      env = { "rack.session" => session }
      get "/tasks/#{task.task_uuid}", {}, env
      expect(last_response.headers["set-cookie"].to_s).not_to include("tasker_web_csrf")
      token = csrf_token_from(last_response.body)
      expect(session["tasker_web.csrf"]).to eq(token)

      post "/tasks/#{task.task_uuid}/cancel", { "authenticity_token" => "forged" }, env
      expect(last_response.status).to eq(403)
      post "/tasks/#{task.task_uuid}/cancel", { "authenticity_token" => token }, env
      expect(last_response.status).to eq(303)
    end

    it "hides every action and refuses every POST in read-only mode" do
      task = create_parked({})
      token = csrf_token_from(page_html("/tasks/#{task.task_uuid}"))
      TaskerCore::Web.read_only = true

      html = page_html("/tasks/#{task.task_uuid}")
      expect(html).not_to include("<form method=\"post\"")
      expect(html).to include('<span class="badge read-only">read-only</span>')
      post "/tasks/#{task.task_uuid}/cancel", "authenticity_token" => token
      expect(last_response.status).to eq(403)
      expect(last_response.body).to eq("The dashboard is read-only.")
      expect(task.reload.status).to eq("in_progress")
    end

    it "answers 404 for an unknown path" do
      get "/nope"
      expect(last_response.status).to eq(404)
    end
  end

  describe TaskerCore::Web::Server do
    it "listens on 127.0.0.1 by default and refuses another address without credentials" do
      expect(described_class.from_env({}).host).to eq("127.0.0.1")
      expect { described_class.new(host: "0.0.0.0") }
        .to raise_error(TaskerCore::ConfigurationError, /TASKER_WEB_USER and TASKER_WEB_PASSWORD/)
      expect { described_class.new(host: "10.1.2.3", user: "ops", password: "") }
        .to raise_error(TaskerCore::ConfigurationError)
      expect(described_class.new(host: "::1").loopback?).to be(true)
      expect(described_class.new(host: "0.0.0.0", user: "ops", password: "s3cret").credentials?).to be(true)
    end

    it "asks for basic auth when credentials are set" do
      app = described_class.new(host: "0.0.0.0", user: "ops", password: "s3cret").app
      request = Rack::MockRequest.new(app)

      expect(request.get("/templates").status).to eq(401)
      expect(request.get("/templates", "HTTP_AUTHORIZATION" => "Basic #{['ops:wrong'].pack('m0')}").status).to eq(401)
      expect(request.get("/templates", "HTTP_AUTHORIZATION" => "Basic #{['ops:s3cret'].pack('m0')}").status).to eq(200)
      expect(described_class.new.app).to be(TaskerCore::Web)
    end

    it "refuses to start from bin/tasker-web on a public address without credentials" do
      out = IO.popen({ "TASKER_WEB_HOST" => "0.0.0.0", "DATABASE_URL" => TEST_DATABASE_URL },
                     [RbConfig.ruby, File.join(ROOT, "bin/tasker-web")], err: %i[child out], &:read)
      expect($CHILD_STATUS.exitstatus).to eq(2)
      expect(out).to include("refusing to serve the dashboard on 0.0.0.0 without authentication")
    end
  end
end
