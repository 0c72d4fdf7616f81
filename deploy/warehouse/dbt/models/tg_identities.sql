{#
  Who is behind each identifier: one row per lead, user and device, with
  the person they belong to. A person is a lead ('l:' || lead_id) when one
  is known: a user is linked to a lead by any event carrying both (an
  ingested account_created with user_id and lead_id), a device by any event
  carrying it with a lead or a user (a form post). Otherwise the user
  ('u:' || user_id) or the device alone ('d:' || device_id). Where one
  identifier links to several leads, the smallest id wins, so the result
  does not depend on load order.
#}
with user_person as (
  select
    user_id as identifier,
    min(case when lead_id is not null then {{ dbt.concat(["'l:'", 'lead_id']) }} end) as lead_person
  from {{ ref('tg_events') }}
  where user_id is not null
  group by user_id
),

device_person as (
  select
    e.device_id as identifier,
    min(
      case
        when e.lead_id is not null then {{ dbt.concat(["'l:'", 'e.lead_id']) }}
        else coalesce(u.lead_person, {{ dbt.concat(["'u:'", 'e.user_id']) }})
      end
    ) as person_id
  from {{ ref('tg_events') }} as e
  left join user_person as u on u.identifier = e.user_id
  where e.device_id is not null
    and (e.lead_id is not null or e.user_id is not null)
  group by e.device_id
)

select 'lead' as identifier_type, lead_id as identifier, {{ dbt.concat(["'l:'", 'lead_id']) }} as person_id
from {{ ref('tg_events') }}
where lead_id is not null
group by lead_id

union all

select 'user', identifier, coalesce(lead_person, {{ dbt.concat(["'u:'", 'identifier']) }})
from user_person

union all

select 'device', d.device_id, coalesce(p.person_id, {{ dbt.concat(["'d:'", 'd.device_id']) }})
from (
  select device_id from {{ ref('tg_events') }} where device_id is not null group by device_id
) as d
left join device_person as p on p.identifier = d.device_id
