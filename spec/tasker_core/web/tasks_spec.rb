# frozen_string_literal: true

require "spec_helper"
require_relative "../../support/web"

# Rack-level: the task list's filters, find and keyset pagination. The
# webdlq namespace has no worker, so its tasks stay in progress.
RSpec.describe "TaskerCore::Web task list", :web do
  def listed(html)
    html.scan(/<tr data-task="([^"]+)">/).flatten
  end

  it "pages through a namespace's tasks newest first, 50 at a time, both ways" do
    uuids = Array.new(52) { create_parked({}).task_uuid }.reverse

    first = page_html("/tasks?namespace=webdlq")
    expect(listed(first)).to eq(uuids.first(50))
    expect(first).not_to include('rel="prev"')
    older = first[/rel="next" href="([^"]+)"/, 1].gsub("&amp;", "&")

    second = page_html(older)
    expect(listed(second)).to eq(uuids.last(2))
    expect(second).not_to include('rel="next"')
    newer = second[/rel="prev" href="([^"]+)"/, 1].gsub("&amp;", "&")

    expect(listed(page_html(newer))).to eq(uuids.first(50))
  end

  it "filters by namespace, template, version, status and time range" do
    parked = create_parked({})
    diamond = create_diamond({})

    expect(listed(page_html("/tasks?namespace=webdlq"))).to eq([parked.task_uuid])
    expect(listed(page_html("/tasks?name=diamond_order&namespace=webui"))).to eq([diamond.task_uuid])
    expect(listed(page_html("/tasks?namespace=webdlq&version=2.1.0"))).to eq([parked.task_uuid])
    expect(listed(page_html("/tasks?namespace=webdlq&version=1.0.0"))).to eq([])
    expect(listed(page_html("/tasks?namespace=webdlq&status=in_progress"))).to eq([parked.task_uuid])
    expect(listed(page_html("/tasks?namespace=webdlq&status=error"))).to eq([])

    hour_ago = (Time.now.utc - 3600).strftime("%Y-%m-%dT%H:%M")
    in_an_hour = (Time.now.utc + 3600).strftime("%Y-%m-%dT%H:%M")
    expect(listed(page_html("/tasks?namespace=webdlq&from=#{hour_ago}&to=#{in_an_hour}"))).to eq([parked.task_uuid])
    expect(listed(page_html("/tasks?namespace=webdlq&from=#{in_an_hour}"))).to eq([])
    expect(listed(page_html("/tasks?namespace=webdlq&to=#{hour_ago}"))).to eq([])
    expect(page_html("/tasks?namespace=webdlq&from=yesterday")).to include("from is not a time: yesterday")
  end

  it "finds a task by uuid or identity key" do
    task = create_diamond({}, identity_key: "order-4711")

    get "/tasks?q=#{task.task_uuid.upcase}"
    expect(last_response.status).to eq(303)
    expect(last_response.headers["location"]).to eq("/tasks/#{task.task_uuid}")

    get "/tasks?q=order-4711"
    expect(last_response.headers["location"]).to eq("/tasks/#{task.task_uuid}")

    expect(page_html("/tasks?q=order-0000")).to include("No task has the uuid or identity key order-0000.")
  end
end
