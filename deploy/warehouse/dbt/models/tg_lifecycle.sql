{#
  The lifecycle events ingested from the back office (account_created,
  upgrades, cancellations: origin 'ingest'), each joined to the conversion
  of the same person (its lead, or the lead its user is linked to) that
  came last before it, and that conversion's first and last non-direct
  touch: which channel brought the customers who later upgraded. Join
  tg_attribution on conversion_event_id for the other models' credits.
#}
with lifecycle as (
  select
    e.event_id as lifecycle_event_id,
    e.event_name,
    e.occurred_at,
    e.event_day,
    e.user_id,
    e.lead_id,
    {{ tg_person_id() }} as person_id,
    e.properties
  from {{ ref('tg_events') }} as e
  {{ tg_person_joins('e') }}
  where e.origin = 'ingest'
),

matched as (
  select
    l.*,
    c.conversion_event_id,
    c.event_name as conversion_event_name,
    c.converted_at,
    c.first_touch_channel,
    c.first_touch_source,
    c.first_touch_medium,
    c.first_touch_campaign,
    c.last_touch_channel,
    c.last_touch_source,
    c.last_touch_medium,
    c.last_touch_campaign,
    row_number() over (
      partition by l.lifecycle_event_id
      order by c.converted_at desc, c.conversion_event_id
    ) as match_rank
  from lifecycle as l
  left join {{ ref('tg_conversions') }} as c
    on c.person_id = l.person_id and c.converted_at <= l.occurred_at
)

select
  lifecycle_event_id,
  event_name,
  occurred_at,
  event_day,
  user_id,
  lead_id,
  person_id,
  properties,
  conversion_event_id,
  conversion_event_name,
  converted_at,
  first_touch_channel,
  first_touch_source,
  first_touch_medium,
  first_touch_campaign,
  last_touch_channel,
  last_touch_source,
  last_touch_medium,
  last_touch_campaign
from matched
where match_rank = 1
