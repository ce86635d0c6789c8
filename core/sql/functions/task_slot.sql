-- The concurrency slot a task of template p_namespace/p_name takes under
-- its template's limit p_limit ({key: "context.a.b", max}), for its context:
-- 'task:<namespace>/<name>=<the context's value at the key>' (the empty
-- string when the context has none there: such tasks share one slot).
CREATE FUNCTION tasker_task_slot(p_namespace text, p_name text, p_limit jsonb, p_context jsonb)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT 'task:' || p_namespace || '/' || p_name || '='
         || coalesce(p_context #>> string_to_array(substr(p_limit ->> 'key', 9), '.'), '')
$$;
