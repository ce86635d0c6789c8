# frozen_string_literal: true

require "spec_helper"
require_relative "../../support/web"

# The binary search that stands in for an index on created_at. Other specs
# write transitions too, so the expectations are about this example's rows.
RSpec.describe TaskerCore::Web::Queries::TransitionWindow, :web do
  let(:window) { described_class.new("tasker_workflow_step_transitions") }
  let(:connection) { ActiveRecord::Base.connection }

  def transition_ids(task)
    connection.select_values(
      "SELECT tr.id FROM tasker_workflow_step_transitions tr JOIN tasker_workflow_steps s USING (step_uuid) " \
      "WHERE s.task_uuid = '#{task.task_uuid}' ORDER BY tr.id"
    ).map(&:to_i)
  end

  it "finds the first transition of the window across gaps in the ids" do
    old, gone, recent = Array.new(3) { create_parked({}) }
    old_ids = transition_ids(old)
    gone_ids = transition_ids(gone)
    # Everything up to old's transitions is moved out of the window, and
    # gone's rows leave a gap right before the window starts.
    connection.execute("UPDATE tasker_workflow_step_transitions SET created_at = now() - interval '3 hours' " \
                       "WHERE id <= #{old_ids.max}")
    connection.execute("DELETE FROM tasker_workflow_step_transitions WHERE id IN (#{gone_ids.join(', ')})")

    first = window.first_id_since(Time.now - 3600)
    expect(first).to be > old_ids.max
    expect(connection.select_value("SELECT min(id) FROM tasker_workflow_step_transitions WHERE id >= #{first}").to_i)
      .to eq(transition_ids(recent).min)
    expect(window.first_id_since(Time.now - (4 * 3600))).to be <= old_ids.min
    expect(window.first_id_since(Time.now + 120)).to be_nil
  end

  it "refuses any other table" do
    expect { described_class.new("tasker_tasks") }.to raise_error(ArgumentError, /not a transition table/)
  end
end
