-- tasker_core's tables: the catalogue (namespaces, templates, named steps),
-- the runtime rows (tasks, workflow steps, edges) and their append-only
-- transition history. The SQL functions that change them live in
-- core/sql/functions, one file each, and are installed by every migrate.
--
-- This is the baseline: from the first release on, a schema change is a new
-- migration file beside this one, and migrations are never edited again.

-- ---- states and the transitions between them -------------------------------
-- The allowed states and transitions are CHECK constraints on the rows and
-- the history (below), so the database refuses an invalid one even when a
-- caller bypasses the engine's functions. They are checks rather than
-- foreign keys to lookup tables: a foreign key check locks the one lookup
-- row every concurrent transaction shares (FOR KEY SHARE), which costs a
-- WAL record and, under load, a MultiXact per state change.
--
-- Each check is a call to an immutable PL/pgSQL function below rather than
-- the expression itself: PostgreSQL reads and prepares a check's stored
-- expression again for every statement that writes the table, which for
-- the allowed pairs cost about 20 us a statement even written as one
-- 'from>to' array (20,000 single-row inserts: 104 ms with no check, 404 ms
-- with the array, 124 ms with the function; written as (from, to) IN (...)
-- it had been a third of an outcome statement's CPU), and nearly every
-- statement of the hot path writes a history table. These functions are
-- part of the schema (constraints depend on them), not of
-- core/sql/functions, whose functions are dropped and installed anew.
--
-- from_state '' stands for "no previous state" (the initial transition). A
-- step is claimed from 'enqueued' (its message was read), straight from
-- 'pending' (eager dispatch: the worker that finished its last dependency
-- runs it next) and from 'waiting_for_retry' (its delayed message came
-- due). Self-transitions keep a step's state and record something that
-- arrived late (an outcome of an attempt that was taken over).

CREATE FUNCTION tasker_check_task_status(p_status text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  RETURN p_status = ANY ('{pending,in_progress,complete,error,cancelled}'::text[]);
END $$;

CREATE FUNCTION tasker_check_step_status(p_status text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  RETURN p_status = ANY ('{pending,enqueued,in_progress,complete,error,waiting_for_retry,cancelled,resolved_manually,skipped}'::text[]);
END $$;

CREATE FUNCTION tasker_check_task_transition(p_from text, p_to text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  RETURN p_from || '>' || p_to = ANY (ARRAY[
    '>pending',
    'pending>in_progress', 'pending>cancelled',
    'in_progress>complete', 'in_progress>error', 'in_progress>cancelled',
    'error>in_progress', 'error>cancelled']);
END $$;

CREATE FUNCTION tasker_check_step_transition(p_from text, p_to text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  RETURN (p_from = p_to AND p_to <> '') OR p_from || '>' || p_to = ANY (ARRAY[
    '>pending',
    'pending>enqueued', 'pending>in_progress', 'pending>cancelled', 'pending>resolved_manually', 'pending>skipped',
    'enqueued>in_progress', 'enqueued>cancelled', 'enqueued>resolved_manually',
    'in_progress>complete', 'in_progress>error', 'in_progress>waiting_for_retry',
    'in_progress>enqueued', 'in_progress>cancelled', 'in_progress>resolved_manually',
    'waiting_for_retry>in_progress', 'waiting_for_retry>enqueued', 'waiting_for_retry>cancelled',
    'waiting_for_retry>resolved_manually',
    'error>pending', 'error>resolved_manually', 'error>cancelled']);
END $$;

-- ---- catalogue ----------------------------------------------------------------

CREATE TABLE tasker_namespaces (
  name       text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,39}$'),
  queue_name text NOT NULL UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tasker_task_templates (
  template_id bigserial PRIMARY KEY,
  namespace   text NOT NULL REFERENCES tasker_namespaces (name),
  name        text NOT NULL,
  version     text NOT NULL,
  description text,
  definition  jsonb NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (namespace, name, version)
);

-- A step removed from a template when it is registered again stays
-- (`active` false: old tasks point at it) but new tasks no longer get it.
-- `namespace` is the queue the step's messages go to and the workers that
-- may run it: the template's own unless the step names another.
CREATE TABLE tasker_named_steps (
  named_step_id    bigserial PRIMARY KEY,
  template_id      bigint NOT NULL REFERENCES tasker_task_templates (template_id) ON DELETE CASCADE,
  name             text NOT NULL,
  namespace        text NOT NULL REFERENCES tasker_namespaces (name),
  position         integer NOT NULL,
  handler_callable text NOT NULL,
  handler_config   jsonb NOT NULL DEFAULT '{}',
  retryable        boolean NOT NULL DEFAULT true,
  max_attempts     integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
  backoff_base_ms  integer NOT NULL DEFAULT 1000 CHECK (backoff_base_ms >= 0),
  max_backoff_ms   integer NOT NULL DEFAULT 30000 CHECK (max_backoff_ms >= 0),
  timeout_seconds  integer CHECK (timeout_seconds > 0),
  -- The names of the steps this one waits for (the template's
  -- `dependencies`), kept here so creating a task reads its roots and edges
  -- from these rows instead of parsing the template's definition.
  dependencies     text[] NOT NULL DEFAULT '{}',
  active           boolean NOT NULL DEFAULT true,
  -- The template's `decision: true`: the step's result names which of its
  -- dependents run (see tasker_apply_decisions).
  decision         boolean NOT NULL DEFAULT false,
  -- Dynamic fan-out (the template's `fan_out:`). On the fan-out step:
  -- {"from": result key, "join": join step name, "child": child named step
  -- name}; its outcome creates the children (tasker_fan_out). On the
  -- children's named step (named `<fan-out step>[]`): {"child_of": the
  -- fan-out step's name}; tasker_create_task makes no step of it.
  fan_out          jsonb,
  -- The step's concurrency limit (`concurrency:`), NULL when it has none:
  -- {scope, path (into the task context), max}; see tasker_limit_steps.
  concurrency      jsonb,
  -- The step's rate limit (`rate_limit:`), NULL when it has none: {scope,
  -- path, per_second, burst}; see tasker_take_token.
  rate_limit       jsonb,
  UNIQUE (template_id, name)
);

-- ---- runtime rows ----------------------------------------------------------------
-- The current state lives on the row; `transitions` counts the row's history
-- entries, so appending one needs no read of the history (its sort_key is
-- the count after the append).
--
-- Runtime rows name their template and named steps without a foreign key:
-- the catalogue rows are written once and never deleted (a step removed
-- from a template is retired, `active = false`), and a foreign key check
-- locks the referenced row (FOR KEY SHARE) for every task and step
-- inserted. Every concurrent creation of a template's tasks locked the same
-- catalogue rows, which costs a WAL record per row and a MultiXact where
-- two transactions hold the lock: about a twelfth of a task's creation.
-- Nor do a task's own rows (its steps, edges and history) name their task
-- or step with a foreign key: every one is written by the functions in
-- core/sql/functions, which create a task's rows together, and each
-- check ran a query and locked the task's or step's row again (a WAL
-- record for each row first locked so): seven checks per step, about a
-- twentieth of PostgreSQL's CPU per step. Deleting a task still deletes
-- its rows, by the statement trigger after the tables below.

CREATE TABLE tasker_tasks (
  task_uuid      uuid PRIMARY KEY,
  template_id    bigint NOT NULL, -- tasker_task_templates; no foreign key (above)
  namespace      text NOT NULL,
  name           text NOT NULL,
  version        text NOT NULL,
  context        jsonb NOT NULL DEFAULT '{}',
  status         text NOT NULL DEFAULT 'pending' CHECK (tasker_check_task_status(status)),
  transitions    integer NOT NULL DEFAULT 0,
  identity_key   text UNIQUE,
  correlation_id uuid NOT NULL,
  -- The W3C traceparent the task was created under: every step's span is
  -- its child, in whichever process runs it (see telemetry/traces.rs).
  traceparent    text,
  -- Set when one of the task's steps ends in error, never cleared: only
  -- then can an outcome that leaves other steps blocked end the task (see
  -- tasker_record_outcomes).
  has_failed_step boolean NOT NULL DEFAULT false,
  -- A delayed task (create_task run_at:/delay:) waits `pending`, its steps
  -- created but none enqueued, until an orchestrator releases it at run_at.
  run_at          timestamptz,
  -- The task's deadline (template or create_task timeout_seconds), counted
  -- from when it starts running (deadline_at, set then): an orchestrator
  -- ends a task still in progress past it in error, reason 'deadline'.
  timeout_seconds integer CHECK (timeout_seconds > 0),
  deadline_at     timestamptz,
  -- Higher runs first (create_task priority:, else the template's, else
  -- 0): every message of the task's steps carries it, and a queue is read
  -- in order of its aged key (see tasker_install_queue). The range maps one
  -- to one onto RabbitMQ's priorities 0..10.
  priority        smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN -5 AND 5),
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now(),
  completed_at   timestamptz,
  -- The concurrency slot the task holds (its template's `concurrency:`),
  -- given back when it ends; see tasker_concurrency_slots.
  concurrency_slot text
);
-- Tasks not finished, in creation order within each state: the sweep walks
-- the tasks in progress through it a slice at a time.
CREATE INDEX tasker_tasks_active_idx ON tasker_tasks (status, task_uuid) WHERE status IN ('pending', 'in_progress');
-- Retention finds finished tasks by when they finished. completed_at is set
-- only by a task's terminal transition, which changes its (indexed) status
-- anyway, so this index adds no write to any other update.
CREATE INDEX tasker_tasks_completed_at_idx ON tasker_tasks (completed_at) WHERE completed_at IS NOT NULL;
-- Delayed tasks by when they are due, and tasks with a deadline by it: an
-- orchestrator's scheduler reads the due ones a few times a second. Only
-- tasks that have one are in either index (a task row's other updates
-- change none of these columns, so they stay heap-only).
CREATE INDEX tasker_tasks_run_at_idx ON tasker_tasks (run_at) WHERE status = 'pending';
CREATE INDEX tasker_tasks_deadline_idx ON tasker_tasks (deadline_at)
  WHERE status = 'in_progress' AND deadline_at IS NOT NULL;

-- heartbeat_at: refreshed by the worker running the step; a claim whose
-- heartbeat is older than the visibility timeout is stale (its worker is
-- gone) and the step is taken over.
--
-- A step's row changes several times in its life (enqueued, claimed,
-- heartbeats, its outcome) and no index covers a column that changes:
-- every change is then a heap-only update, which writes no index entry
-- and is pruned without VACUUM; fillfactor leaves each page room for the
-- new versions. Per-task lookups use the (task_uuid, name) key; what looks
-- across tasks for steps in some state (the sweep, the dashboard) starts
-- from the tasks in progress, whose index is small. Without the indexes on
-- status and updated_at, WAL records per step fell by a quarter.
CREATE TABLE tasker_workflow_steps (
  step_uuid     uuid PRIMARY KEY,
  task_uuid     uuid NOT NULL, -- tasker_tasks; no foreign key (above)
  named_step_id bigint NOT NULL, -- tasker_named_steps; no foreign key (above)
  name          text NOT NULL,
  position      integer NOT NULL,
  status        text NOT NULL DEFAULT 'pending' CHECK (tasker_check_step_status(status)),
  transitions   integer NOT NULL DEFAULT 0,
  attempts      integer NOT NULL DEFAULT 0,
  max_attempts  integer NOT NULL,
  results       jsonb,
  last_error    jsonb,
  retry_at      timestamptz,
  enqueued_at   timestamptz,
  started_at    timestamptz,
  heartbeat_at  timestamptz,
  completed_at  timestamptz,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  -- A fan-out child's element of its fan-out step's result array (NULL for
  -- a template's own steps) and its index in that array.
  input         jsonb,
  fan_out_index integer,
  -- The concurrency slot the step holds (its named step's `concurrency:`),
  -- from when it is enqueued until it ends; see tasker_concurrency_slots.
  concurrency_slot text,
  UNIQUE (task_uuid, name)
) WITH (fillfactor = 70);

CREATE TABLE tasker_workflow_step_edges (
  task_uuid      uuid NOT NULL,
  from_step_uuid uuid NOT NULL,
  to_step_uuid   uuid NOT NULL,
  PRIMARY KEY (to_step_uuid, from_step_uuid),
  CHECK (from_step_uuid <> to_step_uuid)
);
CREATE INDEX tasker_workflow_step_edges_from_idx ON tasker_workflow_step_edges (from_step_uuid);

-- ---- cron schedules ----------------------------------------------------------------
-- One row per slot of a template's cron schedule that was fired (task_uuid
-- set) or skipped for good (task_uuid NULL, `skipped` slots up to and
-- including slot_at, older than the catch-up window after a downtime). The
-- primary key makes a slot fire once however many orchestrators run: the
-- row and the task are inserted in one transaction. Keyed by the template's
-- namespace and name, not its version: a new version takes the schedule
-- over without firing its slots again.
CREATE TABLE tasker_schedule_slots (
  namespace  text NOT NULL,
  name       text NOT NULL,
  schedule   text NOT NULL,
  slot_at    timestamptz NOT NULL,
  task_uuid  uuid, -- tasker_tasks; no foreign key: retention deletes tasks, not slots
  skipped    integer NOT NULL DEFAULT 0 CHECK (skipped >= 0),
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (namespace, name, schedule, slot_at)
);

-- ---- concurrency limits ----------------------------------------------------------------
-- One row per limit and key value: `slot` is '<scope>=<value>' (scope
-- 'task:<namespace>/<name>' for a template's limit, 'step:<namespace>/<name>/
-- <step>' for a step's; every version of a template shares them), in_use
-- counts its holders (tasks or steps whose concurrency_slot names it).
-- Taking a slot, giving one back and handing it to a waiter all happen with
-- this row locked, so the count is exact however many processes run.
CREATE TABLE tasker_concurrency_slots (
  slot       text PRIMARY KEY,
  max_slots  integer NOT NULL CHECK (max_slots >= 1),
  in_use     integer NOT NULL DEFAULT 0 CHECK (in_use >= 0),
  updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- The tasks (pending, not started) and steps (pending, ready) waiting for a
-- slot, in order of `turn`: when it began to wait minus its task's
-- priority credit (tasker_priority_credit), so a holder giving its slot
-- back hands it, in the same transaction, to the waiter of highest
-- priority, and among equals to the oldest, as the queues serve messages.
-- A waiter that moved on meanwhile (cancelled, resolved) is dropped when
-- its turn comes.
CREATE TABLE tasker_concurrency_waiters (
  slot      text NOT NULL,
  holder    uuid NOT NULL UNIQUE, -- the waiting task's or step's uuid
  task_uuid uuid NOT NULL,
  since     timestamptz NOT NULL DEFAULT clock_timestamp(),
  turn      timestamptz NOT NULL,
  PRIMARY KEY (slot, turn, holder)
);

-- Rate limits: one bucket per step's limit and key value ('rate:<ns>/
-- <name>/<step>=<value>'): `tokens` holds, for each of its burst tokens,
-- when it is next free. See tasker_take_token.
CREATE TABLE tasker_rate_buckets (
  bucket     text PRIMARY KEY,
  tokens     timestamptz[] NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- ---- history: one row per state change, never rewritten --------------------------

CREATE TABLE tasker_task_transitions (
  task_uuid   uuid NOT NULL,
  sort_key    integer NOT NULL,
  from_state  text NOT NULL DEFAULT '',
  to_state    text NOT NULL,
  metadata    jsonb NOT NULL DEFAULT '{}',
  created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (task_uuid, sort_key),
  CONSTRAINT tasker_task_transitions_allowed CHECK (tasker_check_task_transition(from_state, to_state))
);

CREATE TABLE tasker_workflow_step_transitions (
  step_uuid   uuid NOT NULL,
  sort_key    integer NOT NULL,
  from_state  text NOT NULL DEFAULT '',
  to_state    text NOT NULL,
  metadata    jsonb NOT NULL DEFAULT '{}',
  created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (step_uuid, sort_key),
  CONSTRAINT tasker_workflow_step_transitions_allowed CHECK (tasker_check_step_transition(from_state, to_state))
);
-- The dashboard's "last hour" reads the newest history: a BRIN index on an
-- append-only table is a few pages and costs an insert next to nothing.
CREATE INDEX tasker_workflow_step_transitions_created_idx ON tasker_workflow_step_transitions
  USING brin (created_at) WITH (autosummarize = on);

-- Deleting tasks deletes their steps, edges and history (what ON DELETE
-- CASCADE did), once per statement, through the deleted rows.
CREATE FUNCTION tasker_delete_task_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM tasker_workflow_step_edges e
   USING tasker_workflow_steps s, deleted_tasks d WHERE s.task_uuid = d.task_uuid AND e.to_step_uuid = s.step_uuid;
  DELETE FROM tasker_workflow_step_transitions h
   USING tasker_workflow_steps s, deleted_tasks d WHERE s.task_uuid = d.task_uuid AND h.step_uuid = s.step_uuid;
  DELETE FROM tasker_workflow_steps s USING deleted_tasks d WHERE s.task_uuid = d.task_uuid;
  DELETE FROM tasker_task_transitions h USING deleted_tasks d WHERE h.task_uuid = d.task_uuid;
  RETURN NULL;
END $$;

CREATE TRIGGER tasker_tasks_delete_rows AFTER DELETE ON tasker_tasks
  REFERENCING OLD TABLE AS deleted_tasks FOR EACH STATEMENT EXECUTE FUNCTION tasker_delete_task_rows();
