-- Takes a token of rate-limit bucket p_bucket ('<scope>=<key value>', a
-- step's `rate_limit:`) and returns when the step holding it may start:
-- now when a token is free, else when the next one comes back. The bucket
-- holds p_burst tokens; a token taken at t is back at t + p_burst /
-- p_per_second, so at most p_burst steps start in any p_burst /
-- p_per_second seconds and, over time, p_per_second a second; steps that
-- wait are spaced 1 / p_per_second apart. A token is
-- reserved at once even when it is due later (the step's message is sent
-- to be visible then): waiting steps are spread over the coming tokens
-- instead of all trying again when one comes back. The bucket's row is
-- locked for the reservation, so the count holds across processes. A
-- burst changed by a new registration resizes the bucket.
CREATE FUNCTION tasker_take_token(p_bucket text, p_per_second double precision, p_burst integer)
RETURNS timestamptz LANGUAGE plpgsql AS $$
DECLARE
  v_tokens timestamptz[];
  v_now timestamptz := clock_timestamp();
  v_i integer;
  v_at timestamptz;
BEGIN
  INSERT INTO tasker_rate_buckets AS b (bucket, tokens)
  VALUES (p_bucket, array_fill('-infinity'::timestamptz, ARRAY[p_burst]))
  ON CONFLICT (bucket) DO UPDATE SET updated_at = clock_timestamp()
  RETURNING b.tokens INTO v_tokens;
  IF cardinality(v_tokens) < p_burst THEN
    v_tokens := v_tokens || array_fill('-infinity'::timestamptz, ARRAY[p_burst - cardinality(v_tokens)]);
  ELSIF cardinality(v_tokens) > p_burst THEN
    v_tokens := ARRAY(SELECT u.t FROM unnest(v_tokens) AS u(t) ORDER BY u.t DESC LIMIT p_burst);
  END IF;
  SELECT u.i INTO v_i FROM unnest(v_tokens) WITH ORDINALITY AS u(t, i) ORDER BY u.t, u.i LIMIT 1;
  v_at := greatest(v_now, v_tokens[v_i]);
  -- A step that must wait also starts at least 1 / p_per_second after the
  -- latest reservation (the latest token's time, less its period): a
  -- backlog then starts evenly spaced, instead of in clusters of p_burst
  -- a period apart, which a little lag in picking them up would let two
  -- clusters fall in one period.
  IF v_at > v_now THEN
    v_at := greatest(v_at, (SELECT max(u.t) FROM unnest(v_tokens) AS u(t))
                           - make_interval(secs => p_burst / p_per_second)
                           + make_interval(secs => 1 / p_per_second));
  END IF;
  v_tokens[v_i] := v_at + make_interval(secs => p_burst / p_per_second);
  UPDATE tasker_rate_buckets SET tokens = v_tokens WHERE bucket = p_bucket;
  RETURN v_at;
END $$;
