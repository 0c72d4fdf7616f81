{# Each conversion with its lead or user and person, and its first and last
   non-direct touch over the attribution window (the direct touch itself
   when there is no other), from tg_conversion_touches. #}
with touches as (
  select * from {{ ref('tg_conversion_touches') }}
),

first_touch as (
  select * from touches where touch_rank = coalesce(first_non_direct_rank, 1)
),

last_touch as (
  select * from touches where touch_rank = coalesce(last_non_direct_rank, touch_count)
)

select
  c.conversion_event_id,
  c.event_name,
  c.converted_at,
  c.conversion_day,
  c.device_id,
  c.session_id,
  c.lead_id,
  c.user_id,
  c.person_id,
  c.status,
  f.touch_count,
  f.channel as first_touch_channel,
  f.source as first_touch_source,
  f.medium as first_touch_medium,
  f.campaign as first_touch_campaign,
  f.touch_at as first_touch_at,
  l.channel as last_touch_channel,
  l.source as last_touch_source,
  l.medium as last_touch_medium,
  l.campaign as last_touch_campaign,
  l.touch_at as last_touch_at
from {{ ref('tg_conversion_events') }} as c
inner join first_touch as f on f.conversion_event_id = c.conversion_event_id
inner join last_touch as l on l.conversion_event_id = c.conversion_event_id
