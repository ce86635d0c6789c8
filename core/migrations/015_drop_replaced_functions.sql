-- Functions nothing calls any more: the per-step claim and completion
-- (replaced by the set-based tasker_claim_steps and tasker_complete_steps,
-- migration 013) and the per-task readiness pass and finalization
-- (replaced by the set-based tasker_advance_tasks, migration 014). Left in
-- place they would be a second, unmaintained copy of those rules.
DROP FUNCTION tasker_claim_step(uuid, text, interval);
DROP FUNCTION tasker_complete_step(uuid, integer, jsonb, jsonb);
DROP FUNCTION tasker_enqueue_ready_steps(uuid, integer);
DROP FUNCTION tasker_finalize_task(uuid);
