# frozen_string_literal: true

class Charge < ApplicationRecord
  belongs_to :order

  scope :succeeded, -> { where(status: "succeeded") }

  validates :status, inclusion: { in: %w[succeeded declined] }
end
