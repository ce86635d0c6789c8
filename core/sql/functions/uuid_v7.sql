-- UUIDv7 (time-ordered, RFC 9562): 48 bits of Unix milliseconds, the
-- version nibble 7, then 12 bits of the fraction of the millisecond
-- (method 3: two uuids made one after the other in one session sort in
-- that order, as a list's keyset pages expect), then random bits with the
-- variant. PostgreSQL 15 has no built-in. Tasks and steps get them, so
-- their primary keys grow in time order.
CREATE FUNCTION tasker_uuid_v7() RETURNS uuid LANGUAGE sql VOLATILE AS $$
  SELECT encode(
    substring(int8send(t.us / 1000) FROM 3)
      || int2send((28672 + (t.us % 1000) * 4096 / 1000)::smallint)
      || substring(uuid_send(gen_random_uuid()) FROM 9),
    'hex')::uuid
    FROM (SELECT floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS us) AS t
$$;
