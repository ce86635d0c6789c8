-- Locks the row of the step's task (operator actions change a step and then
-- its task, in that task's order with every outcome and advance) and
-- returns the task's uuid, or NULL when the step does not exist.
CREATE FUNCTION tasker_lock_task_of_step(p_step uuid)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
  v_task uuid;
BEGIN
  SELECT t.task_uuid INTO v_task
    FROM tasker_tasks t
   WHERE t.task_uuid = (SELECT s.task_uuid FROM tasker_workflow_steps s WHERE s.step_uuid = p_step)
     FOR NO KEY UPDATE;
  RETURN v_task;
END $$;
