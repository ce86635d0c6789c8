# frozen_string_literal: true

require "spec_helper"
require "open3"
require "tmpdir"

RSpec.describe "rake tasker:templates" do
  def rake(task, boot:, database_url: TEST_DATABASE_URL)
    env = { "DATABASE_URL" => database_url, "RUBYLIB" => File.join(ROOT, "lib"), "TASKER_BOOT" => boot }
    Open3.capture2e(env, "rake", "-f", File.join(ROOT, "Rakefile"), task)
  end

  describe "validate" do
    around do |example|
      Dir.mktmpdir("templates") do |dir|
        @dir = dir
        example.run
      end
    end

    let(:boot) do
      File.join(@dir, "boot.rb").tap do |file|
        File.write(file, <<~RUBY)
          require "tasker_core"
          TaskerCore.configure { |c| c.template_paths = [#{File.join(@dir, 'templates').inspect}] }
        RUBY
      end
    end

    def template_file(name, yaml)
      FileUtils.mkdir_p(File.join(@dir, "templates"))
      File.join(@dir, "templates", name).tap { |file| File.write(file, yaml) }
    end

    # No database at all: port 1 refuses every connection.
    let(:nowhere) { "postgres://postgres@127.0.0.1:1/nowhere" }

    it "checks every file, names each problem with its file, fails, and never needs the database" do
      good = template_file("good.yaml", "namespace: ci\nname: good\nversion: 1.0.0\nsteps:\n  " \
                                        "- {name: a, handler: {callable: A}}\n")
      bad = template_file("bad.yml", "namespace: ci\nname: bad\nversion: 1.0.0\nsteps:\n  " \
                                     "- {name: a, dependencies: [zzz], handler: {callable: A}}\n")

      output, status = rake("tasker:templates:validate", boot: boot, database_url: nowhere)

      expect(status.exitstatus).to eq(1)
      expect(output.lines.map(&:chomp)).to eq(
        ["invalid #{bad}: template ci/bad@1.0.0: step \"a\" depends on unknown step \"zzz\"",
         "ok      #{good}: ci/good@1.0.0",
         "1 of 2 template file(s) invalid"]
      )
    end

    it "passes when every file is valid" do
      good = template_file("good.yaml", "namespace: ci\nname: good\nversion: 1.0.0\nsteps:\n  " \
                                        "- {name: a, handler: {callable: A}}\n")

      output, status = rake("tasker:templates:validate", boot: boot, database_url: nowhere)

      expect([status.exitstatus, output]).to eq([0, "ok      #{good}: ci/good@1.0.0\n1 template file(s) valid\n"])
    end
  end

  it "lists the templates registered in the database" do
    output, status = rake("tasker:templates:list", boot: File.join(ROOT, "spec/support/boot.rb"))

    expect(status.exitstatus).to eq(0)
    expect(output.lines.grep(%r{\Asettings/greetings@1\.0\.0 }).map(&:chomp))
      .to match([%r{\Asettings/greetings@1\.0\.0 +4 step\(s\)  registered \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\z}])
    expect(output.lines.grep(%r{\Aexamples/diamond_workflow@1\.0\.0 +4 step\(s\)}).size).to eq(1)
  end
end
