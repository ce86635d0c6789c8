# frozen_string_literal: true

class OrderEvent < ApplicationRecord
  belongs_to :order
end
