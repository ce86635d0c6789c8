# frozen_string_literal: true

class Product < ApplicationRecord
  has_many :line_items, dependent: :restrict_with_exception

  validates :sku, :name, presence: true
  validates :price_cents, numericality: { only_integer: true, greater_than: 0 }
  validates :stock, numericality: { only_integer: true, greater_than_or_equal_to: 0 }
end
