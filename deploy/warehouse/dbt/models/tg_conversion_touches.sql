{#
  The touches each conversion is credited over, in order: every landing of
  the same person (all devices linked to the lead or user) in the
  attribution window before the conversion. A touch the conversion carries
  in its own first_touch / last_touch fields (the tg_ft / tg_lt cookies)
  that has no landing event of the converting device at the same second
  happened before the data starts, and stands in for its landing. A
  conversion with no touch at all gets one Direct touch at its own time,
  so that every conversion's credits sum to 1.
#}
with conversions as (
  select * from {{ ref('tg_conversion_events') }}
),

windowed as (
  select
    conversions.*,
    {{ dbt.dateadd('day', -1 * var('attribution_window_days') | int, 'converted_at') }} as window_start
  from conversions
),

landing_touches as (
  select
    c.conversion_event_id,
    'landing' as touch_kind,
    t.touchpoint_event_id,
    t.touch_at,
    t.channel,
    t.source,
    t.medium,
    t.campaign
  from windowed as c
  inner join {{ ref('tg_touchpoints') }} as t
    on t.person_id = c.person_id
    and t.touch_at <= c.converted_at
    and t.touch_at >= c.window_start
),

field_touches as (
  select conversion_event_id, device_id, window_start, converted_at,
    first_at as touch_at, first_channel as channel, first_source as source,
    first_medium as medium, first_campaign as campaign
  from windowed
  where first_at is not null
  union all
  select conversion_event_id, device_id, window_start, converted_at,
    last_at, last_channel, last_source, last_medium, last_campaign
  from windowed
  where last_at is not null
),

stand_in_touches as (
  select distinct
    f.conversion_event_id,
    'cookie' as touch_kind,
    cast(null as {{ dbt.type_string() }}) as touchpoint_event_id,
    f.touch_at,
    f.channel,
    f.source,
    f.medium,
    f.campaign
  from field_touches as f
  where f.touch_at >= f.window_start
    and f.touch_at <= f.converted_at
    and not exists (
      select 1
      from {{ ref('tg_touchpoints') }} as t
      where t.device_id = f.device_id
        and {{ dbt.date_trunc('second', 't.touch_at') }} = f.touch_at
    )
),

no_touches as (
  select
    c.conversion_event_id,
    'none' as touch_kind,
    cast(null as {{ dbt.type_string() }}) as touchpoint_event_id,
    c.converted_at as touch_at,
    'Direct' as channel,
    '(direct)' as source,
    '(none)' as medium,
    cast(null as {{ dbt.type_string() }}) as campaign
  from windowed as c
  where not exists (select 1 from landing_touches as l where l.conversion_event_id = c.conversion_event_id)
    and not exists (select 1 from stand_in_touches as s where s.conversion_event_id = c.conversion_event_id)
),

touches as (
  select * from landing_touches
  union all
  select * from stand_in_touches
  union all
  select * from no_touches
),

ranked as (
  select
    touches.*,
    row_number() over (
      partition by conversion_event_id
      order by touch_at, touch_kind, coalesce(touchpoint_event_id, '')
    ) as touch_rank,
    count(*) over (partition by conversion_event_id) as touch_count
  from touches
)

select
  r.conversion_event_id,
  c.event_name,
  c.converted_at,
  c.person_id,
  r.touch_rank,
  r.touch_count,
  min(case when r.channel <> 'Direct' then r.touch_rank end)
    over (partition by r.conversion_event_id) as first_non_direct_rank,
  max(case when r.channel <> 'Direct' then r.touch_rank end)
    over (partition by r.conversion_event_id) as last_non_direct_rank,
  r.touch_kind,
  r.touchpoint_event_id,
  r.touch_at,
  r.channel,
  r.source,
  r.medium,
  r.campaign
from ranked as r
inner join conversions as c on c.conversion_event_id = r.conversion_event_id
