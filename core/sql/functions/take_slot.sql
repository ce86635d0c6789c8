-- Takes one of slot p_slot's p_max places for p_holder (a task, or a step
-- of task p_task, whose priority is p_priority) with the slot's row
-- locked, so the count is exact across processes: 'taken' (in_use + 1;
-- the caller records p_slot on the holder's row), or, when all are in use,
-- 'waiting' (p_holder joins the slot's waiters, in order of priority and
-- age: see tasker_concurrency_waiters) or 'still_waiting' (it already
-- waited). A limit lowered by a new registration applies to the next taker.
CREATE FUNCTION tasker_take_slot(p_slot text, p_max integer, p_holder uuid, p_task uuid, p_priority integer)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  v_in_use integer;
BEGIN
  INSERT INTO tasker_concurrency_slots AS c (slot, max_slots) VALUES (p_slot, p_max)
  ON CONFLICT (slot) DO UPDATE SET max_slots = EXCLUDED.max_slots
  RETURNING c.in_use INTO v_in_use;
  IF v_in_use < p_max THEN
    UPDATE tasker_concurrency_slots SET in_use = in_use + 1, updated_at = clock_timestamp() WHERE slot = p_slot;
    DELETE FROM tasker_concurrency_waiters WHERE holder = p_holder;
    RETURN 'taken';
  END IF;
  INSERT INTO tasker_concurrency_waiters (slot, holder, task_uuid, turn)
  VALUES (p_slot, p_holder, p_task, clock_timestamp() - tasker_priority_credit(p_priority))
  ON CONFLICT (holder) DO NOTHING;
  RETURN CASE WHEN FOUND THEN 'waiting' ELSE 'still_waiting' END;
END $$;
