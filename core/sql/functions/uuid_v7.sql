-- UUIDv7 (time-ordered, RFC 9562): 48 bits of Unix milliseconds, the
-- version nibble 7, then 12 bits of the fraction of the millisecond
-- (method 3: two uuids made one after the other in one session sort in
-- that order, as a list's keyset pages expect), then random bits with the
-- variant. PostgreSQL 15 has no built-in. Tasks and steps get them, so
-- their primary keys grow in time order.
-- PL/pgSQL rather than SQL: a SQL function with a FROM clause is not
-- inlined, and running it as a query costs twice what these two simple
-- expressions do.
CREATE FUNCTION tasker_uuid_v7() RETURNS uuid LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  us bigint := floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
BEGIN
  RETURN encode(substring(int8send(us / 1000) FROM 3)
                || int2send((28672 + (us % 1000) * 4096 / 1000)::smallint)
                || substring(uuid_send(gen_random_uuid()) FROM 9),
                'hex')::uuid;
END $$;
