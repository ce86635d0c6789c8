-- Retention (tasker_prune_finished_tasks) finds finished tasks by when they
-- finished, and deletes each one's edges by task: both by index, so a batch
-- costs its own rows whatever the tables hold. completed_at is set only by
-- a task's terminal transition, which changes its status (already indexed),
-- so the first index adds no index write to any other update; edges are
-- written once, when their task is created.
CREATE INDEX tasker_tasks_completed_at_idx ON tasker_tasks (completed_at) WHERE completed_at IS NOT NULL;
CREATE INDEX tasker_workflow_step_edges_task_idx ON tasker_workflow_step_edges (task_uuid);
