{{ config(materialized = 'ephemeral') }}
{# The conversions of tg_events with their person, before any touch is
   joined: what tg_conversion_touches and tg_conversions both start from. #}
select
  e.event_id as conversion_event_id,
  e.event_name,
  e.occurred_at as converted_at,
  e.event_day as conversion_day,
  e.device_id,
  e.session_id,
  e.lead_id,
  e.user_id,
  {{ tg_person_id() }} as person_id,
  e.status,
  e.natural_key,
  e.first_channel,
  e.first_source,
  e.first_medium,
  e.first_campaign,
  e.first_at,
  e.last_channel,
  e.last_source,
  e.last_medium,
  e.last_campaign,
  e.last_at,
  e.last_valid
from {{ ref('tg_events') }} as e
{{ tg_person_joins('e') }}
where {{ tg_is_conversion('e') }}
