-- Second dedupe pass for PostgreSQL, for events loaded WITHOUT the postgres
-- sink's primary key: JSON lines of the file sink (COPY), NDJSON batches of
-- the http sink, a Kafka connector, several touchgate deployments writing
-- to one place. (The postgres sink's own table needs none of this: its
-- primary key on event_id already keeps one row per event.)
--
-- Raw events land as they come, duplicates included, in
-- touchpoint_events_raw; analysts query the view touchpoint_events_dedup,
-- which keeps ONE row per event_id: the copy received first (received_at,
-- then load time, then the physical row as a last tie-break).
--
-- received_at is compared as text on purpose: touchgate always writes it as
-- RFC 3339 UTC with milliseconds (2026-11-29T10:00:00.123Z), a fixed-width
-- form whose text order is time order, and a text sort can use the index
-- below (a cast to timestamptz cannot be indexed: it depends on TimeZone).
--
-- Loading JSON lines, for example:
--   \copy touchpoint_events_raw (payload) FROM 'events.jsonl'
--         WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02')
-- (csv with quote and delimiter bytes that never occur in JSON, so each
-- line arrives as one untouched jsonb value).

CREATE TABLE IF NOT EXISTS touchpoint_events_raw (
    payload   jsonb NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS touchpoint_events_raw_dedupe_idx
    ON touchpoint_events_raw ((payload->>'event_id'), (payload->>'received_at'), loaded_at);

CREATE OR REPLACE VIEW touchpoint_events_dedup AS
SELECT DISTINCT ON (payload->>'event_id')
    payload->>'event_id'                           AS event_id,
    payload->>'event_name'                         AS event_name,
    payload->>'origin'                             AS origin,
    (payload->>'occurred_at')::timestamptz         AS occurred_at,
    (payload->>'received_at')::timestamptz         AS received_at,
    payload->>'device_id'                          AS device_id,
    payload->>'session_id'                         AS session_id,
    payload->>'user_id'                            AS user_id,
    payload->>'lead_id'                            AS lead_id,
    payload->>'touchpoint_id'                      AS touchpoint_id,
    payload->>'natural_key'                        AS natural_key,
    payload->'touch'->>'channel'                   AS channel,
    payload->'touch'->>'source'                    AS source,
    payload->'touch'->>'medium'                    AS medium,
    payload->'touch'->>'campaign'                  AS campaign,
    payload->'touch'->>'click_id_type'             AS click_id_type,
    (payload->'touch'->>'valid')::boolean          AS valid,
    payload->'first_touch'->>'channel'             AS first_channel,
    payload->'last_touch'->>'channel'              AS last_channel,
    payload->'last_touch'->>'source'               AS last_source,
    payload->'last_touch'->>'medium'               AS last_medium,
    payload->'last_touch'->>'campaign'             AS last_campaign,
    payload->'page'->>'path'                       AS page_path,
    (payload->>'status')::integer                  AS status,
    payload,
    loaded_at
FROM touchpoint_events_raw
ORDER BY payload->>'event_id', payload->>'received_at', loaded_at, ctid;
