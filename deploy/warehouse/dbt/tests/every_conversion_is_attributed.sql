-- Every conversion has credits under each of the five models.
select c.conversion_event_id, m.model
from {{ ref('tg_conversions') }} as c
cross join (
  select 'first_touch' as model union all select 'last_non_direct'
  union all select 'linear' union all select 'position_based' union all select 'time_decay'
) as m
where not exists (
  select 1 from {{ ref('tg_attribution') }} as a
  where a.conversion_event_id = c.conversion_event_id and a.model = m.model
)
