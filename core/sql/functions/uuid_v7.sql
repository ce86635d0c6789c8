-- UUIDv7 (time-ordered): 48 bits of Unix milliseconds, then random bits,
-- with the version nibble set to 7. PostgreSQL 15 has no built-in. Tasks
-- and steps get them, so their primary keys grow in time order.
CREATE FUNCTION tasker_uuid_v7() RETURNS uuid LANGUAGE sql VOLATILE AS $$
  SELECT encode(
    set_bit(set_bit(
      overlay(uuid_send(gen_random_uuid())
              PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
              FROM 1 FOR 6),
      52, 1), 53, 1),
    'hex')::uuid
$$;
