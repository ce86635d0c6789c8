# frozen_string_literal: true

require "spec_helper"
require_relative "../../support/web"

# Rack-level. The webdlq queue has no worker, so what is replayed stays there.
RSpec.describe "TaskerCore::Web dead letters", :web do
  let(:poison) { { "order" => 7, "task_uuid" => "not-a-uuid" } }

  def box(html, queue)
    html[%r{<section class="dead-letter-box" id="[^"]*" data-queue="#{queue}">.*?</section>}m]
  end

  if SPEC_PROVIDER == :pgmq
    it "lists a message in a queue's archive with the reason, and replays it to its queue" do
      dead_letter(webdlq_queue, poison)

      html = page_html("/dead_letters")
      letters = box(html, webdlq_queue)
      expect(letters).to include('count">1</span>', "not a step message: missing step_uuid, correlation_id",
                                 "{&quot;order&quot;:7,&quot;task_uuid&quot;:&quot;not-a-uuid&quot;}")
      id = letters[/<tr data-letter="(\d+)">/, 1]

      post_with_token("/dead_letters/#{webdlq_queue}/#{id}/replay", from: "/dead_letters")

      expect(last_response.headers["location"]).to eq("/dead_letters?notice=replayed")
      expect(archived_count(webdlq_queue)).to eq(0)
      replayed = TaskerCore.message_service.receive(webdlq_queue, max: 10, visibility_timeout: 30)
      expect(replayed.map(&:payload)).to eq([poison])
      after = page_html("/dead_letters?notice=replayed")
      count = after[%r{<tr data-count-queue="#{webdlq_queue}">.*?</tr>}m].gsub(/\s+/, " ")
      expect(count)
        .to eq(%(<tr data-count-queue="#{webdlq_queue}"><td>#{webdlq_queue}</td> <td class="num">0</td></tr>))
      expect(box(after, webdlq_queue)).to be_nil

      post_with_token("/dead_letters/#{webdlq_queue}/#{id}/replay", from: "/dead_letters")
      expect(last_response.headers["location"]).to eq("/dead_letters?notice=gone")
    end

    it "shows the reason the core kept with a dead letter" do
      dead_letter(webdlq_queue, { "n" => 1 }, reason: "delivered 6 times, more than messaging.max_receive_count (5)")

      letters = box(page_html("/dead_letters"), webdlq_queue)
      expect(letters).to include("delivered 6 times, more than messaging.max_receive_count (5)")
      expect(letters).not_to include("not a step message")
    end

    it "discards one message, or all of a queue's" do
      3.times { |i| dead_letter(webdlq_queue, { "n" => i }) }
      id = box(page_html("/dead_letters"), webdlq_queue)[/<tr data-letter="(\d+)">/, 1]

      post_with_token("/dead_letters/#{webdlq_queue}/#{id}/discard", from: "/dead_letters")
      expect(archived_count(webdlq_queue)).to eq(2)

      post_with_token("/dead_letters/#{webdlq_queue}/discard_all", from: "/dead_letters")
      expect(archived_count(webdlq_queue)).to eq(0)
      expect(TaskerCore.message_service.stats(webdlq_queue)[:depth]).to eq(0)
    end

    it "refuses a queue the engine does not know" do
      post_with_token("/dead_letters/no_such_queue/1/discard", from: "/dead_letters")
      expect(last_response.status).to eq(422)
      expect(last_response.body).to include("no queue named no_such_queue")
    end
  else
    it "counts each queue's RabbitMQ dead letters and discards them" do
      # The broker outlives the test database: start from an empty store.
      TaskerCore.message_service.purge_queue("#{webdlq_queue}.dlq")
      2.times { |i| dead_letter(webdlq_queue, { "n" => i }) }
      eventually(what: "both dead letters") { TaskerCore.message_service.stats("#{webdlq_queue}.dlq")[:depth] == 2 }

      html = page_html("/dead_letters")
      expect(box(html, webdlq_queue)).to include('count">2</span>', "Discard all")
      expect(html).not_to include("Replay")

      post_with_token("/dead_letters/#{webdlq_queue}/discard_all", from: "/dead_letters")
      expect(last_response.headers["location"]).to eq("/dead_letters?notice=discarded_all")
      expect(TaskerCore.message_service.stats("#{webdlq_queue}.dlq")[:depth]).to eq(0)

      post_with_token("/dead_letters/#{webdlq_queue}/1/replay", from: "/dead_letters")
      expect(last_response.status).to eq(404)
    end
  end
end
