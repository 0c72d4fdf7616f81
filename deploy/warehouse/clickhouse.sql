-- Second dedupe pass for ClickHouse: a ReplacingMergeTree ordered by
-- event_id. Rows with the same sorting key are merged in the background,
-- keeping the one with the highest `version`; `version` is derived from
-- received_at so that the copy RECEIVED FIRST wins, as in the PostgreSQL
-- view and the BigQuery MERGE.
--
-- Merges happen eventually, not at insert: query with FINAL (or the view
-- below) to see exactly one row per event_id at any moment.
--
-- ReplacingMergeTree merges only within a partition. The table is not
-- partitioned, so every duplicate merges. For a very large table you may
-- add `PARTITION BY toYYYYMM(occurred_at)`: a re-delivered event has the
-- same occurred_at and still merges; only two captures of one logical event
-- in different months would not (the edge dedupe window makes that rare).

CREATE TABLE IF NOT EXISTS touchpoint_events
(
    event_id      String,
    event_name    LowCardinality(String),
    origin        LowCardinality(String),
    occurred_at   DateTime64(3, 'UTC'),
    received_at   DateTime64(3, 'UTC'),
    device_id     Nullable(String),
    session_id    Nullable(String),
    user_id       Nullable(String),
    lead_id       Nullable(String),
    touchpoint_id Nullable(String),
    natural_key   Nullable(String),
    channel       LowCardinality(Nullable(String)),
    source        Nullable(String),
    medium        Nullable(String),
    campaign      Nullable(String),
    click_id_type LowCardinality(Nullable(String)),
    valid         Nullable(Bool),
    first_channel LowCardinality(Nullable(String)),
    last_channel  LowCardinality(Nullable(String)),
    last_source   Nullable(String),
    last_medium   Nullable(String),
    last_campaign Nullable(String),
    page_path     Nullable(String),
    status        Nullable(UInt16),
    -- The whole event JSON (CONTRACT.md "Events").
    payload       String,
    inserted_at   DateTime64(3, 'UTC') DEFAULT now64(3),
    -- Earlier received_at => higher version => kept.
    version       UInt64 MATERIALIZED toUInt64(9999999999999) - toUInt64(toUnixTimestamp64Milli(received_at))
)
ENGINE = ReplacingMergeTree(version)
ORDER BY event_id;

CREATE VIEW IF NOT EXISTS touchpoint_events_dedup AS
SELECT * FROM touchpoint_events FINAL;

-- Optional: read the `kafka` sink's topic straight into the table. Each
-- message value is the event JSON; JSONAsString hands it over whole.
--
-- CREATE TABLE touchpoint_events_queue (raw String)
-- ENGINE = Kafka
-- SETTINGS kafka_broker_list = 'kafka:9092',
--          kafka_topic_list = 'touchpoints',
--          kafka_group_name = 'clickhouse-touchpoints',
--          kafka_format = 'JSONAsString';
--
-- CREATE MATERIALIZED VIEW touchpoint_events_from_kafka TO touchpoint_events AS
-- SELECT
--     JSONExtractString(raw, 'event_id')                                    AS event_id,
--     JSONExtractString(raw, 'event_name')                                  AS event_name,
--     JSONExtractString(raw, 'origin')                                      AS origin,
--     parseDateTime64BestEffort(JSONExtractString(raw, 'occurred_at'), 3, 'UTC') AS occurred_at,
--     parseDateTime64BestEffort(JSONExtractString(raw, 'received_at'), 3, 'UTC') AS received_at,
--     JSONExtract(raw, 'device_id', 'Nullable(String)')                     AS device_id,
--     JSONExtract(raw, 'session_id', 'Nullable(String)')                    AS session_id,
--     JSONExtract(raw, 'user_id', 'Nullable(String)')                       AS user_id,
--     JSONExtract(raw, 'lead_id', 'Nullable(String)')                       AS lead_id,
--     JSONExtract(raw, 'touchpoint_id', 'Nullable(String)')                 AS touchpoint_id,
--     JSONExtract(raw, 'natural_key', 'Nullable(String)')                   AS natural_key,
--     JSONExtract(raw, 'touch', 'channel', 'Nullable(String)')              AS channel,
--     JSONExtract(raw, 'touch', 'source', 'Nullable(String)')               AS source,
--     JSONExtract(raw, 'touch', 'medium', 'Nullable(String)')               AS medium,
--     JSONExtract(raw, 'touch', 'campaign', 'Nullable(String)')             AS campaign,
--     JSONExtract(raw, 'touch', 'click_id_type', 'Nullable(String)')        AS click_id_type,
--     JSONExtract(raw, 'touch', 'valid', 'Nullable(Bool)')                  AS valid,
--     JSONExtract(raw, 'first_touch', 'channel', 'Nullable(String)')        AS first_channel,
--     JSONExtract(raw, 'last_touch', 'channel', 'Nullable(String)')         AS last_channel,
--     JSONExtract(raw, 'last_touch', 'source', 'Nullable(String)')          AS last_source,
--     JSONExtract(raw, 'last_touch', 'medium', 'Nullable(String)')          AS last_medium,
--     JSONExtract(raw, 'last_touch', 'campaign', 'Nullable(String)')        AS last_campaign,
--     JSONExtract(raw, 'page', 'path', 'Nullable(String)')                  AS page_path,
--     JSONExtract(raw, 'status', 'Nullable(UInt16)')                        AS status,
--     raw                                                                   AS payload
-- FROM touchpoint_events_queue;
