{# One row per session (the tg_sid cookie: 30 minutes, sliding): its device
   and person, when it started and ended, how many landings and conversions
   it held, and the touch it entered with (its first landing). Every event
   of a session has its device, so the person is the device's. #}
with session_events as (
  select
    e.session_id,
    e.device_id,
    e.occurred_at,
    e.event_name,
    e.channel,
    e.source,
    e.medium,
    e.campaign,
    case when e.event_name = 'landing' then 1 else 0 end as is_landing,
    case when {{ tg_is_conversion('e') }} then 1 else 0 end as is_conversion,
    row_number() over (
      partition by e.session_id
      order by case when e.event_name = 'landing' then 0 else 1 end, e.occurred_at, e.event_id
    ) as entry_rank
  from {{ ref('tg_events') }} as e
  where e.session_id is not null and e.origin = 'proxy' and e.event_name <> 'form_attempt'
),

sessions as (
  select
    session_id,
    min(device_id) as device_id,
    min(occurred_at) as started_at,
    max(occurred_at) as ended_at,
    cast(min(occurred_at) as date) as session_day,
    sum(is_landing) as landings,
    sum(is_conversion) as conversions,
    max(case when entry_rank = 1 and is_landing = 1 then channel end) as entry_channel,
    max(case when entry_rank = 1 and is_landing = 1 then source end) as entry_source,
    max(case when entry_rank = 1 and is_landing = 1 then medium end) as entry_medium,
    max(case when entry_rank = 1 and is_landing = 1 then campaign end) as entry_campaign
  from session_events
  group by session_id
)

select
  s.session_id,
  s.device_id,
  person_device.person_id,
  s.started_at,
  s.ended_at,
  s.session_day,
  s.landings,
  s.conversions,
  s.entry_channel,
  s.entry_source,
  s.entry_medium,
  s.entry_campaign
from sessions as s
left join {{ ref('tg_identities') }} as person_device
  on person_device.identifier_type = 'device' and person_device.identifier = s.device_id
