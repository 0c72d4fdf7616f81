{#
  One row per event_id: the copy received first. Incremental on event_id:
  a run adds only the ids the table does not have, so re-reading the same
  files, a file loaded twice or a batch the sink delivered twice changes
  nothing, and an event that arrives days late is added with its own
  occurred_at (its own day) and the loaded_at of the run that first saw it.
#}
{{ config(
    materialized = 'incremental',
    unique_key = 'event_id',
    incremental_strategy = 'delete+insert',
    on_schema_change = 'append_new_columns',
    indexes = ([{'columns': ['event_id'], 'unique': True}] if target.type == 'postgres' else [])
) }}

with arrived as (
  {{ tg_raw_events() }}
),

fresh as (
  select
    arrived.*,
    row_number() over (
      partition by event_id
      order by received_at, copy_order
    ) as copy_rank
  from arrived
  {% if is_incremental() %}
  where not exists (select 1 from {{ this }} as known where known.event_id = arrived.event_id)
  {% endif %}
)

select
  event_id,
  event_name,
  origin,
  occurred_at,
  received_at,
  arrived_at as loaded_at,
  cast(occurred_at as date) as event_day,
  device_id,
  session_id,
  user_id,
  lead_id,
  touchpoint_id,
  natural_key,
  page_url,
  page_path,
  referrer_host,
  channel,
  channel_ga4,
  source,
  medium,
  campaign,
  term,
  content,
  click_id_type,
  touch_valid,
  first_channel,
  first_source,
  first_medium,
  first_campaign,
  first_valid,
  first_at,
  last_channel,
  last_source,
  last_medium,
  last_campaign,
  last_valid,
  last_at,
  status,
  client_cid,
  properties,
  source_file
from fresh
where copy_rank = 1
