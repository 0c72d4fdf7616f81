-- Second dedupe pass for BigQuery: events are loaded, duplicates included,
-- into a staging table, then MERGEd into the reporting table on event_id.
-- Within the staging data the copy received first wins; an event_id
-- already in the reporting table is left as it is. Run the MERGE after each
-- load (a scheduled query), then empty the staging table.
--
-- Replace `analytics` with your dataset.

-- The reporting table: one row per event_id.
CREATE TABLE IF NOT EXISTS `analytics.touchpoint_events` (
  event_id      STRING NOT NULL,
  event_name    STRING NOT NULL,
  origin        STRING,
  occurred_at   TIMESTAMP NOT NULL,
  received_at   TIMESTAMP NOT NULL,
  device_id     STRING,
  session_id    STRING,
  user_id       STRING,
  lead_id       STRING,
  touchpoint_id STRING,
  natural_key   STRING,
  channel       STRING,
  source        STRING,
  medium        STRING,
  campaign      STRING,
  click_id_type STRING,
  valid         BOOL,
  first_channel STRING,
  last_channel  STRING,
  last_source   STRING,
  last_medium   STRING,
  last_campaign STRING,
  page_path     STRING,
  status        INT64,
  payload       JSON,
  inserted_at   TIMESTAMP
)
PARTITION BY DATE(occurred_at)
CLUSTER BY event_name, event_id;

-- The staging table, loaded with the JSON lines of the file sink or the
-- NDJSON batches of the http sink:
--   bq load --source_format=NEWLINE_DELIMITED_JSON --ignore_unknown_values \
--     analytics.touchpoint_events_staging events.jsonl
-- Nested objects land in JSON columns.
CREATE TABLE IF NOT EXISTS `analytics.touchpoint_events_staging` (
  schema        STRING,
  event_id      STRING NOT NULL,
  event_name    STRING NOT NULL,
  origin        STRING,
  occurred_at   TIMESTAMP NOT NULL,
  received_at   TIMESTAMP NOT NULL,
  device_id     STRING,
  session_id    STRING,
  user_id       STRING,
  lead_id       STRING,
  touchpoint_id STRING,
  natural_key   STRING,
  page          JSON,
  touch         JSON,
  first_touch   JSON,
  last_touch    JSON,
  client        JSON,
  status        INT64,
  capture       STRING,
  consent       JSON,
  properties    JSON
);

MERGE `analytics.touchpoint_events` AS t
USING (
  SELECT
    s.event_id,
    s.event_name,
    s.origin,
    s.occurred_at,
    s.received_at,
    s.device_id,
    s.session_id,
    s.user_id,
    s.lead_id,
    s.touchpoint_id,
    s.natural_key,
    JSON_VALUE(s.touch, '$.channel')             AS channel,
    JSON_VALUE(s.touch, '$.source')              AS source,
    JSON_VALUE(s.touch, '$.medium')              AS medium,
    JSON_VALUE(s.touch, '$.campaign')            AS campaign,
    JSON_VALUE(s.touch, '$.click_id_type')       AS click_id_type,
    SAFE_CAST(JSON_VALUE(s.touch, '$.valid') AS BOOL) AS valid,
    JSON_VALUE(s.first_touch, '$.channel')       AS first_channel,
    JSON_VALUE(s.last_touch, '$.channel')        AS last_channel,
    JSON_VALUE(s.last_touch, '$.source')         AS last_source,
    JSON_VALUE(s.last_touch, '$.medium')         AS last_medium,
    JSON_VALUE(s.last_touch, '$.campaign')       AS last_campaign,
    JSON_VALUE(s.page, '$.path')                 AS page_path,
    s.status,
    TO_JSON(s)                                   AS payload
  FROM `analytics.touchpoint_events_staging` AS s
  WHERE TRUE -- QUALIFY wants a WHERE, GROUP BY or HAVING beside it
  -- One row per event_id within the load: the first received.
  QUALIFY ROW_NUMBER() OVER (PARTITION BY s.event_id ORDER BY s.received_at) = 1
) AS n
ON t.event_id = n.event_id
  -- To scan fewer partitions of a large table, add a bound such as
  --   AND t.occurred_at >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 35 DAY)
  -- (a re-delivered event keeps its occurred_at; only an older duplicate
  -- of a logical event would then be inserted twice).
WHEN NOT MATCHED THEN
  INSERT (event_id, event_name, origin, occurred_at, received_at, device_id, session_id, user_id,
          lead_id, touchpoint_id, natural_key, channel, source, medium, campaign, click_id_type,
          valid, first_channel, last_channel, last_source, last_medium, last_campaign, page_path,
          status, payload, inserted_at)
  VALUES (n.event_id, n.event_name, n.origin, n.occurred_at, n.received_at, n.device_id,
          n.session_id, n.user_id, n.lead_id, n.touchpoint_id, n.natural_key, n.channel, n.source,
          n.medium, n.campaign, n.click_id_type, n.valid, n.first_channel, n.last_channel,
          n.last_source, n.last_medium, n.last_campaign, n.page_path, n.status, n.payload,
          CURRENT_TIMESTAMP());

-- Then: TRUNCATE TABLE `analytics.touchpoint_events_staging`;
