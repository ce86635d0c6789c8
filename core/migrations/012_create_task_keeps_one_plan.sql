-- Task creation keeps one plan for each of its statements.
--
-- A caller's connection (ActiveRecord's, in a Rails app) plans with
-- PostgreSQL's default plan_cache_mode, under which the statement that
-- inserts a task's steps and their transitions was planned anew on every
-- call once statistics had been gathered (0.46 ms of a 2.2 ms creation in
-- the bench): the generic plan's estimate looked worse than the custom
-- plans'. Every statement in the function finds its rows by key, so the
-- generic plan is the right one whatever the statistics say.
ALTER FUNCTION tasker_create_task(text, text, text, jsonb, text, boolean) SET plan_cache_mode = force_generic_plan;
