# frozen_string_literal: true

# Installs tasker_core's schema into this database: PGMQ, the engine's
# tables (tasker_*) and its SQL functions. TaskerCore.migrate! is
# idempotent and upgrades the schema when the gem's version changes;
# `rake tasker:migrate` runs it too. It works on its own connection,
# hence no DDL transaction here.
class InstallTaskerCore < ActiveRecord::Migration[6.1]
  disable_ddl_transaction!

  def up
    TaskerCore.migrate!
  end

  def down
    raise ActiveRecord::IrreversibleMigration,
          "tasker_core's tables hold every task's history; drop them by hand if you mean to"
  end
end
