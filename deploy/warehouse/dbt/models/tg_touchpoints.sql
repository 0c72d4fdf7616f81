{# Every landing touch: the visit's channel (and, in channel_ga4, the
   channel under GA4's own rules, which differs where touchgate's
   extended rules do), source, medium and campaign,
   with its device, session and person, at the time of the landing. A
   landing carries no lead or user: its person is its device's. #}
select
  e.event_id as touchpoint_event_id,
  e.touchpoint_id,
  e.occurred_at as touch_at,
  e.event_day,
  e.device_id,
  e.session_id,
  person_device.person_id,
  e.channel,
  coalesce(e.channel_ga4, e.channel) as channel_ga4,
  e.source,
  e.medium,
  e.campaign,
  e.term,
  e.content,
  e.click_id_type,
  e.touch_valid as valid,
  case when e.channel = 'Direct' then true else false end as is_direct,
  e.page_path,
  e.referrer_host
from {{ ref('tg_events') }} as e
left join {{ ref('tg_identities') }} as person_device
  on person_device.identifier_type = 'device' and person_device.identifier = e.device_id
where e.origin = 'proxy' and e.event_name = 'landing'
