{#
  One row per conversion, attribution model and credited touch. Over the
  touches of tg_conversion_touches (n of them, in time order):
    first_touch      the first touch takes 1;
    last_non_direct  the last touch that is not Direct takes 1 (the last
                     touch when all are Direct);
    linear           each touch takes 1/n;
    position_based   40 % first, 40 % last, 20 % shared by the ones
                     between; two touches 50/50; one touch takes all;
    time_decay       weight 2^(-days before the conversion / half_life_days),
                     normalized to sum to 1.
#}
with touches as (
  select
    t.*,
    {{ tg_epoch_seconds('t.converted_at') }} - {{ tg_epoch_seconds('t.touch_at') }} as seconds_before
  from {{ ref('tg_conversion_touches') }} as t
),

decayed as (
  select
    touches.*,
    power(2.0, -1.0 * seconds_before / (86400.0 * {{ var('half_life_days') }})) as decay_weight
  from touches
),

credited as (
  select decayed.*, 'first_touch' as model,
    case when touch_rank = 1 then 1.0 else 0.0 end as credit
  from decayed
  union all
  select decayed.*, 'last_non_direct',
    case when touch_rank = coalesce(last_non_direct_rank, touch_count) then 1.0 else 0.0 end
  from decayed
  union all
  select decayed.*, 'linear', 1.0 / touch_count
  from decayed
  union all
  select decayed.*, 'position_based',
    case
      when touch_count = 1 then 1.0
      when touch_count = 2 then 0.5
      when touch_rank = 1 or touch_rank = touch_count then 0.4
      else 0.2 / (touch_count - 2)
    end
  from decayed
  union all
  select decayed.*, 'time_decay',
    decay_weight / sum(decay_weight) over (partition by conversion_event_id)
  from decayed
)

select
  conversion_event_id,
  event_name,
  model,
  channel,
  source,
  medium,
  campaign,
  touch_at,
  cast(credit as {{ tg_type_double() }}) as credit,
  touch_rank,
  touch_count,
  touch_kind,
  touchpoint_event_id,
  converted_at,
  person_id
from credited
where credit > 0
