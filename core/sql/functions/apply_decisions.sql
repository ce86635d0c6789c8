-- Decision points (a template step with `decision: true`): the step's
-- result, {"run": [names]}, names which of its dependents run.
--
-- tasker_decision_problem says what is wrong with a decision step's result
-- (NULL when nothing is): not {"run": [strings]}, or a name that is not one
-- of the step's dependents. tasker_record_outcomes asks before it records
-- the result, and a result with a problem fails the step for good with
-- that message instead.
CREATE FUNCTION tasker_decision_problem(p_step uuid, p_result jsonb)
RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
  v_step text;
  v_template text;
  v_dependents text[];
  v_bad text[];
BEGIN
  SELECT s.name, t.namespace || '/' || t.name || '@' || t.version,
         ARRAY(SELECT c.name FROM tasker_workflow_step_edges e
                 JOIN tasker_workflow_steps c ON c.step_uuid = e.to_step_uuid
                WHERE e.from_step_uuid = s.step_uuid ORDER BY c.position)
    INTO v_step, v_template, v_dependents
    FROM tasker_workflow_steps s JOIN tasker_tasks t ON t.task_uuid = s.task_uuid
   WHERE s.step_uuid = p_step;
  IF jsonb_typeof(p_result) IS DISTINCT FROM 'object' OR jsonb_typeof(p_result -> 'run') IS DISTINCT FROM 'array' THEN
    RETURN format('decision step %s of template %s returned %s, which is not a decision: return '
                  'TaskerCore::Decision.new(run: [names of its dependents]), recorded as {"run": [...]}',
                  v_step, v_template, left(coalesce(p_result::text, 'null'), 200));
  END IF;
  IF EXISTS (SELECT 1 FROM jsonb_array_elements(p_result -> 'run') AS r(n) WHERE jsonb_typeof(r.n) <> 'string') THEN
    RETURN format('decision step %s of template %s returned run: %s; run must list step names (strings)',
                  v_step, v_template, left((p_result -> 'run')::text, 200));
  END IF;
  v_bad := ARRAY(SELECT DISTINCT r.n FROM jsonb_array_elements_text(p_result -> 'run') AS r(n)
                  WHERE r.n <> ALL (v_dependents) ORDER BY r.n);
  IF cardinality(v_bad) > 0 THEN
    RETURN format('decision step %s of template %s chose %s, not among its dependents (%s)',
                  v_step, v_template, array_to_string(v_bad, ', '),
                  coalesce(nullif(array_to_string(v_dependents, ', '), ''), 'it has none'));
  END IF;
  RETURN NULL;
END $$;

-- Applies the decisions of p_steps (decision steps just completed, in
-- tasks the caller holds locked; any other step is ignored): each one's
-- pending dependents that its result does not name end `skipped`, and so,
-- level by level, does every pending step below them whose dependencies
-- are all skipped (it can no longer run). A step with a dependency that
-- ran and the others skipped runs: no pending step is left with only
-- skipped dependencies, so "every dependency complete, resolved manually
-- or skipped" is what makes a step ready everywhere. Each skip appends one
-- history row (pending -> skipped) naming the decision step and why.
-- Returns the steps skipped; the caller looks among their dependents for
-- steps that became ready.
CREATE FUNCTION tasker_apply_decisions(p_steps uuid[])
RETURNS uuid[] LANGUAGE plpgsql AS $$
DECLARE
  v_skipped uuid[] := '{}';
  v_level uuid[];
  v_reason text;
  r record;
BEGIN
  FOR r IN SELECT s.step_uuid, s.name, s.results
             FROM tasker_workflow_steps s JOIN tasker_named_steps ns ON ns.named_step_id = s.named_step_id
            WHERE s.step_uuid = ANY (p_steps) AND ns.decision AND s.status IN ('complete', 'resolved_manually')
            ORDER BY s.step_uuid
  LOOP
    v_level := ARRAY(SELECT c.step_uuid FROM tasker_workflow_step_edges e
                       JOIN tasker_workflow_steps c ON c.step_uuid = e.to_step_uuid
                      WHERE e.from_step_uuid = r.step_uuid AND c.status = 'pending'
                        AND NOT coalesce(r.results -> 'run' ? c.name, false)
                      ORDER BY c.step_uuid);
    v_reason := 'not_chosen';
    WHILE cardinality(v_level) > 0 LOOP
      WITH moved AS (
        UPDATE tasker_workflow_steps s
           SET status = 'skipped', transitions = s.transitions + 1, updated_at = clock_timestamp()
         WHERE s.step_uuid = ANY (v_level) AND s.status = 'pending'
        RETURNING s.step_uuid, s.transitions
      ), history AS (
        INSERT INTO tasker_workflow_step_transitions (step_uuid, sort_key, from_state, to_state, metadata)
        SELECT m.step_uuid, m.transitions, 'pending', 'skipped',
               jsonb_build_object('decision_step', r.name, 'decision_step_uuid', r.step_uuid, 'reason', v_reason)
          FROM moved m
      )
      SELECT coalesce(array_agg(m.step_uuid ORDER BY m.step_uuid), '{}') INTO v_level FROM moved m;
      v_skipped := v_skipped || v_level;
      -- The next level: dependents of the steps just skipped whose every
      -- dependency is skipped now.
      v_level := ARRAY(SELECT DISTINCT c.step_uuid FROM tasker_workflow_step_edges e
                         JOIN tasker_workflow_steps c ON c.step_uuid = e.to_step_uuid
                        WHERE e.from_step_uuid = ANY (v_level) AND c.status = 'pending'
                          AND NOT EXISTS (SELECT 1 FROM tasker_workflow_step_edges pe
                                            JOIN tasker_workflow_steps p ON p.step_uuid = pe.from_step_uuid
                                           WHERE pe.to_step_uuid = c.step_uuid AND p.status <> 'skipped')
                        ORDER BY c.step_uuid);
      v_reason := 'dependencies_skipped';
    END LOOP;
  END LOOP;
  -- Only a pending step is skipped, and a pending step holds no slot (one
  -- handed a slot is enqueued with it); should one ever, it is given back.
  IF cardinality(v_skipped) > 0 THEN
    PERFORM tasker_give_back_slots(v_skipped);
  END IF;
  RETURN v_skipped;
END $$;
