{#
  The operational checks of `touchgate report`, per UTC day of occurred_at,
  one row per day and check (and event name, for parity):
    direct_share_landings     Direct landings / landings; alert above checks_direct_share_max
    direct_jump_landings      (share - mean share of the trailing checks_trailing_days days) x 100;
                              alert above checks_direct_jump_pp
    direct_share_conversions  conversions whose last touch is Direct (or unknown) / conversions
    direct_jump_conversions   the same jump over its trailing mean
    valid_share_conversions   conversions whose last touch has a valid source/medium;
                              alert below checks_valid_share_min
    latency_p50_seconds, latency_p99_seconds
                              occurred_at -> loaded_at (when the warehouse first had the event)
    parity                    client beacons / server events of one event name, for the names
                              with beacons somewhere in the data; alert below checks_parity_min
  status: 'ok', 'alert', 'no_data' (nothing to divide by), or 'insufficient_data' when the
  check counts fewer than checks_min_events events that day.
#}
with events as (
  select
    e.*,
    case when e.origin = 'proxy' and e.event_name = 'landing' then 1 else 0 end as is_landing,
    case when {{ tg_is_conversion('e') }} then 1 else 0 end as is_conversion
  from {{ ref('tg_events') }} as e
),

daily as (
  select
    event_day,
    sum(is_landing) as landings,
    sum(case when is_landing = 1 and coalesce(channel, last_channel, 'Direct') = 'Direct' then 1 else 0 end)
      as landings_direct,
    sum(is_conversion) as conversions,
    sum(case when is_conversion = 1 and coalesce(last_channel, 'Direct') = 'Direct' then 1 else 0 end)
      as conversions_direct,
    sum(case when is_conversion = 1 and coalesce(last_valid, true) then 1 else 0 end)
      as conversions_valid
  from events
  group by event_day
),

shares as (
  select
    event_day,
    landings,
    conversions,
    conversions_valid,
    case when landings > 0 then 1.0 * landings_direct / landings end as landing_share,
    case when conversions > 0 then 1.0 * conversions_direct / conversions end as conversion_share,
    case when conversions > 0 then 1.0 * conversions_valid / conversions end as valid_share
  from daily
),

trailing_means as (
  select
    d.event_day,
    avg(p.landing_share) as landing_mean,
    avg(p.conversion_share) as conversion_mean
  from shares as d
  left join shares as p
    on p.event_day < d.event_day
    and p.event_day >= {{ dbt.dateadd('day', -1 * var('checks_trailing_days') | int, 'd.event_day') }}
  group by d.event_day
),

latency as (
  select
    event_day,
    count(*) as events,
    {{ tg_percentile('seconds', 0.5) }} as p50,
    {{ tg_percentile('seconds', 0.99) }} as p99
  from (
    select event_day, {{ tg_epoch_seconds('loaded_at') }} - {{ tg_epoch_seconds('occurred_at') }} as seconds
    from events
  ) as l
  group by event_day
),

beacon_names as (
  select distinct event_name from events where origin = 'beacon'
),

parity as (
  select
    e.event_day,
    e.event_name,
    sum(case when e.origin = 'proxy' then 1 else 0 end) as server,
    sum(case when e.origin = 'beacon' then 1 else 0 end) as client
  from events as e
  inner join beacon_names as b on b.event_name = e.event_name
  group by e.event_day, e.event_name
),

checks as (
  select s.event_day, 'direct_share_landings' as check_name, cast(null as {{ dbt.type_string() }}) as event_name,
    s.landing_share as value, s.landings as events, {{ var('checks_direct_share_max') }} as threshold, 'max' as bound
  from shares as s
  union all
  select s.event_day, 'direct_jump_landings', null,
    (s.landing_share - t.landing_mean) * 100.0, s.landings, {{ var('checks_direct_jump_pp') }}, 'max'
  from shares as s inner join trailing_means as t on t.event_day = s.event_day
  union all
  select s.event_day, 'direct_share_conversions', null,
    s.conversion_share, s.conversions, {{ var('checks_direct_share_max') }}, 'max'
  from shares as s
  union all
  select s.event_day, 'direct_jump_conversions', null,
    (s.conversion_share - t.conversion_mean) * 100.0, s.conversions, {{ var('checks_direct_jump_pp') }}, 'max'
  from shares as s inner join trailing_means as t on t.event_day = s.event_day
  union all
  select s.event_day, 'valid_share_conversions', null,
    s.valid_share, s.conversions, {{ var('checks_valid_share_min') }}, 'min'
  from shares as s
  union all
  select event_day, 'latency_p50_seconds', null, p50, events, null, null
  from latency
  union all
  select event_day, 'latency_p99_seconds', null, p99, events, null, null
  from latency
  union all
  select event_day, 'parity', event_name,
    case when server > 0 then 1.0 * client / server end, server, {{ var('checks_parity_min') }}, 'min'
  from parity
)

select
  event_day as check_day,
  check_name,
  event_name,
  cast(value as {{ tg_type_double() }}) as value,
  events,
  cast(threshold as {{ tg_type_double() }}) as threshold,
  case
    when value is null then 'no_data'
    when events < {{ var('checks_min_events') }} then 'insufficient_data'
    when bound = 'max' and value > threshold then 'alert'
    when bound = 'min' and value < threshold then 'alert'
    else 'ok'
  end as status
from checks
