# frozen_string_literal: true

# An order moves pending → validated → inventory_reserved → paid → shipped
# as the fulfillment workflow's handlers run; it ends rejected, out_of_stock
# or payment_declined when a step fails for good.
class Order < ApplicationRecord
  STATUSES = %w[pending validated inventory_reserved paid shipped rejected out_of_stock payment_declined].freeze

  # Raised by reserve_inventory! when a product cannot cover the order.
  class OutOfStock < StandardError; end

  has_many :line_items, dependent: :destroy
  has_many :charges, dependent: :destroy
  has_many :events, -> { order(:id) }, class_name: "OrderEvent", dependent: :delete_all, inverse_of: :order

  validates :customer_email, :payment_token, presence: true
  validates :status, inclusion: { in: STATUSES }

  # Places an order ({ product => quantity }) and starts its fulfillment in
  # one transaction: the order, its lines and the workflow task exist
  # together or not at all.
  def self.place!(customer_email:, payment_token:, items:)
    transaction do
      order = create!(customer_email: customer_email, payment_token: payment_token)
      items.each do |product, quantity|
        order.line_items.create!(product: product, quantity: quantity, unit_price_cents: product.price_cents)
      end
      order.update!(total_cents: order.line_items.sum(&:total_cents))
      order.start_fulfillment!
      order
    end
  end

  # Creates the order_fulfillment task on this transaction's connection.
  # The identity key makes it idempotent: a second call returns the task.
  def start_fulfillment!
    task = TaskerCore.create_task(namespace: "fulfillment", name: "order_fulfillment", version: "1.0.0",
                                  context: { "order_id" => id }, identity_key: "order-#{id}")
    update!(fulfillment_task_uuid: task.task_uuid)
    task
  end

  def fulfillment_task
    TaskerCore::Models::Task.find(fulfillment_task_uuid) if fulfillment_task_uuid
  end

  def record_event!(step_name, message)
    events.create!(step_name: step_name, message: message, pid: Process.pid, created_at: Time.current)
  end

  # Why the order cannot be fulfilled, if anything.
  def problems
    problems = []
    problems << "it has no line items" if line_items.empty?
    problems << "its total #{total_cents} does not match its lines" if total_cents != line_items.sum(&:total_cents)
    problems
  end

  # Takes the order's quantities out of stock, once (a second run returns
  # the same reservation). Locks products in id order, so concurrent
  # reservations cannot deadlock.
  def reserve_inventory!
    transaction do
      lock!
      unless inventory_reserved_at
        line_items.sort_by(&:product_id).each { |item| take_stock!(item) }
        update!(status: "inventory_reserved", inventory_reserved_at: Time.current)
      end
    end
    reservation
  end

  # Puts the reserved quantities back (after a declined payment).
  def release_inventory!
    transaction do
      lock!
      if inventory_reserved_at
        line_items.sort_by(&:product_id).each do |item|
          Product.lock.find(item.product_id).increment!(:stock, item.quantity)
        end
        update!(inventory_reserved_at: nil)
      end
    end
  end

  def reservation
    line_items.includes(:product).to_h { |item| [item.product.sku, item.quantity] }
  end

  private

  def take_stock!(item)
    product = Product.lock.find(item.product_id)
    if product.stock < item.quantity
      raise OutOfStock, "#{product.sku}: #{item.quantity} wanted, #{product.stock} in stock"
    end

    product.update!(stock: product.stock - item.quantity)
  end
end
