-- Records that p_count slots of a schedule, the last at p_last_slot, were
-- older than the catch-up window when an orchestrator came to them (after
-- a downtime) and will never fire. Returns true for the one caller that
-- recorded it (which logs it), false when the slot was already recorded.
CREATE FUNCTION tasker_skip_schedule_slots(p_namespace text, p_name text, p_schedule text,
                                           p_last_slot timestamptz, p_count integer)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO tasker_schedule_slots (namespace, name, schedule, slot_at, skipped)
  VALUES (p_namespace, p_name, p_schedule, p_last_slot, p_count)
  ON CONFLICT DO NOTHING;
  RETURN FOUND;
END $$;
