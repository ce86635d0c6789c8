# frozen_string_literal: true

require "spec_helper"
require_relative "../../support/web"

RSpec.describe "TaskerCore::Web templates", :web do
  it "shows every registered template version with its DAG, steps and input schema" do
    html = page_html("/templates")

    keys = html.scan(/data-template="([^"]+)"/).flatten
    expect(keys).to include("webui/diamond_order@1.0.0", "webdlq/parked@2.1.0", "held/hold@1.0.0")
    expect(keys).to eq(keys.sort_by { |k| k.split(%r{[/@]}).then { |ns, n, v| [ns, n, Gem::Version.new(v)] } })

    diamond = html[%r{<section class="template" id="webui-diamond_order-1-0-0".*?</section>}m]
    expect(diamond.scan(/data-step="([^"]+)" data-state=""/).flatten).to eq(%w[start left right finish])
    expect(diamond.scan(/<path class="edge edge-plain"/).size).to eq(4)
    expect(diamond).to include("<td>finish</td>\n          <td>left, right</td>", "WebFixtures::Step",
                               "retryable: false, max_attempts: 1")
    expect(diamond).to include("&quot;fail_step&quot;: {", "<details class=\"schema\" open>")
    parked = html[%r{<section class="template" id="webdlq-parked-2-1-0".*?</section>}m]
    expect(parked).to include("none: any context is accepted")
  end
end
