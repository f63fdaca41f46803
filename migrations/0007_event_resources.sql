-- What an event's `data` is: the created resource exactly as its own GET
-- returns it (API.md). Writers pass to_jsonb(row) of the row their INSERT
-- returned, which already has the resource's keys, integers and text; only
-- timestamps differ: to_jsonb writes '2026-01-02T03:04:05.1+00:00' in the
-- session's time zone and drops trailing zeros, while the service renders
-- them in C (db/row.c, db_format_timestamp) as UTC with always six digits
-- of fraction and a 'Z'. So created_at is rewritten the same way here.
-- STABLE, not IMMUTABLE: to_char reads nothing of the session once the
-- value is at time zone UTC, but the cast from the JSON text to
-- timestamptz does (DateStyle is irrelevant to ISO input, the time zone is
-- not for input without an offset, which to_jsonb never writes).
CREATE FUNCTION events_resource(p jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN p ? 'created_at' AND jsonb_typeof(p -> 'created_at') = 'string' THEN
            jsonb_set(p, '{created_at}',
                      to_jsonb(to_char((p ->> 'created_at')::timestamptz AT TIME ZONE 'UTC',
                                       'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')))
        ELSE p
    END
$$;
COMMENT ON FUNCTION events_resource(jsonb) IS 'to_jsonb(row) of a created resource as the service''s GET renders it: created_at as UTC YYYY-MM-DDTHH:MM:SS.ffffffZ.';
