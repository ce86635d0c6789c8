-- Fires one slot of a template's cron schedule: records the slot and
-- creates its task (identity key 'schedule:<namespace>/<name>:<schedule>@
-- <slot, UTC>') in the caller's transaction, so a slot has a task if and
-- only if it is recorded; does nothing when the slot is already recorded
-- (another orchestrator fired it, or skipped it after a downtime). Returns
-- the new task's uuid, or NULL. Slots recorded more than a day before this
-- one are deleted (the newest is what the next slot is counted from).
CREATE FUNCTION tasker_fire_schedule_slot(p_namespace text, p_name text, p_version text, p_schedule text,
                                          p_slot timestamptz, p_context jsonb, p_send boolean)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
  v_task uuid;
BEGIN
  INSERT INTO tasker_schedule_slots (namespace, name, schedule, slot_at)
  VALUES (p_namespace, p_name, p_schedule, p_slot)
  ON CONFLICT DO NOTHING;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  SELECT c.task_uuid INTO v_task
    FROM tasker_create_task(p_namespace, p_name, p_version, p_context,
                            format('schedule:%s/%s:%s@%s', p_namespace, p_name, p_schedule,
                                   to_char(p_slot AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
                            p_send) AS c;
  UPDATE tasker_schedule_slots s SET task_uuid = v_task
   WHERE s.namespace = p_namespace AND s.name = p_name AND s.schedule = p_schedule AND s.slot_at = p_slot;
  DELETE FROM tasker_schedule_slots s
   WHERE s.namespace = p_namespace AND s.name = p_name AND s.schedule = p_schedule
     AND s.slot_at < p_slot - interval '1 day';
  RETURN v_task;
END $$;
