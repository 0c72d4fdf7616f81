-- The table the `postgres` sink creates when it is missing (create_table =
-- true, the default), shown for table = "touchpoint_events". Create it
-- yourself and set create_table = false when touchgate's database user may
-- not run DDL. Generated from src/sink/postgres.rs (create_table_sql); a
-- test keeps the two equal.
--
-- One row per event_id (the primary key; the sink inserts with
-- ON CONFLICT (event_id) DO NOTHING, so a re-delivered batch adds nothing).
-- channel, source, medium, campaign, click_id_type, valid: this request's
-- touch; first_channel, last_*: the remembered first and last touches;
-- payload: the whole event JSON (CONTRACT.md "Events").

CREATE TABLE IF NOT EXISTS "touchpoint_events" (
    event_id      text PRIMARY KEY,
    event_name    text NOT NULL,
    origin        text NOT NULL,
    occurred_at   timestamptz NOT NULL,
    received_at   timestamptz NOT NULL,
    device_id     text,
    session_id    text,
    user_id       text,
    lead_id       text,
    touchpoint_id text,
    natural_key   text,
    channel       text,
    source        text,
    medium        text,
    campaign      text,
    click_id_type text,
    valid         boolean,
    first_channel text,
    last_channel  text,
    last_source   text,
    last_medium   text,
    last_campaign text,
    page_path     text,
    status        integer,
    payload       jsonb NOT NULL,
    inserted_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS "touchpoint_events_occurred_at_idx" ON "touchpoint_events" (occurred_at);
CREATE INDEX IF NOT EXISTS "touchpoint_events_name_idx" ON "touchpoint_events" (event_name, occurred_at);
CREATE INDEX IF NOT EXISTS "touchpoint_events_device_idx" ON "touchpoint_events" (device_id, occurred_at);
CREATE INDEX IF NOT EXISTS "touchpoint_events_user_idx" ON "touchpoint_events" (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS "touchpoint_events_lead_idx" ON "touchpoint_events" (lead_id) WHERE lead_id IS NOT NULL;
