# frozen_string_literal: true

class CreateShop < ActiveRecord::Migration[6.1]
  def change
    create_table :products do |t|
      t.string :sku, null: false, index: { unique: true }
      t.string :name, null: false
      t.integer :price_cents, null: false
      t.integer :stock, null: false, default: 0
      t.check_constraint "stock >= 0", name: "products_stock_not_negative"
      t.timestamps
    end

    create_table :orders do |t|
      t.string :customer_email, null: false
      t.string :payment_token, null: false
      t.string :status, null: false, default: "pending"
      t.integer :total_cents, null: false, default: 0
      t.datetime :inventory_reserved_at
      t.string :tracking_number
      t.datetime :shipped_at
      t.uuid :fulfillment_task_uuid
      t.timestamps
    end

    create_table :line_items do |t|
      t.references :order, null: false, foreign_key: true
      t.references :product, null: false, foreign_key: true
      t.integer :quantity, null: false
      t.integer :unit_price_cents, null: false
      t.timestamps
    end

    create_table :charges do |t|
      t.references :order, null: false, foreign_key: true
      t.string :status, null: false
      t.integer :amount_cents, null: false
      t.string :gateway_reference, null: false
      t.string :decline_reason
      t.timestamps
    end

    # What the fulfillment handlers did, one row per handler run: the
    # order's audit trail (and how the specs count runs).
    create_table :order_events do |t|
      t.references :order, null: false, foreign_key: true
      t.string :step_name, null: false
      t.string :message, null: false
      t.integer :pid, null: false
      t.datetime :created_at, null: false
    end
  end
end
