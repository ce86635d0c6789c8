# frozen_string_literal: true

require "capybara/rspec"
require "selenium-webdriver"
require_relative "web"

# Real headless Chromium (Debian's chromium and chromium-driver) driven by
# Capybara and selenium-webdriver against the dashboard served by Puma in
# this process. A missing browser fails the run with how to install it.
module BrowserSetup
  CHROMIUM = "/usr/bin/chromium"
  CHROMEDRIVER = "/usr/bin/chromedriver"
  SCREENSHOTS = File.join(ROOT, "target/screenshots")

  def self.check!
    missing = [CHROMIUM, CHROMEDRIVER].reject { |path| File.executable?(path) }
    return if missing.empty?

    raise "the browser specs need #{missing.join(' and ')}: run bin/setup (or apt-get install chromium chromium-driver)"
  end

  def self.register
    Capybara.register_driver(:tasker_chromium) do |app|
      options = Selenium::WebDriver::Chrome::Options.new
      options.binary = CHROMIUM
      %w[--headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --window-size=1400,1000].each do |arg|
        options.add_argument(arg)
      end
      service = Selenium::WebDriver::Service.chrome(path: CHROMEDRIVER)
      Capybara::Selenium::Driver.new(app, browser: :chrome, options: options, service: service)
    end
    Capybara.app = TaskerCore::Web
    Capybara.server = :puma, { Silent: true }
    Capybara.default_driver = :tasker_chromium
    Capybara.javascript_driver = :tasker_chromium
    Capybara.default_max_wait_time = 10
  end
end

BrowserSetup.check!
BrowserSetup.register

module BrowserHelpers
  # Writes target/screenshots/<name>.png.
  def screenshot(name)
    FileUtils.mkdir_p(BrowserSetup::SCREENSHOTS)
    page.save_screenshot(File.join(BrowserSetup::SCREENSHOTS, "#{name}.png"))
  end

  def node_state(step)
    find(%(svg.dag g.node[data-step="#{step}"]))["data-state"]
  end
end

RSpec.configure do |config|
  config.include BrowserHelpers, :browser
  config.include Capybara::DSL, :browser
  config.after(:each, :browser) { Capybara.reset_sessions! }
end
