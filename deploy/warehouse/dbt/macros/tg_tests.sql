{# Fails (or warns) for every day on which the check named is in alert. #}
{% test tg_check_not_in_alert(model, check_name) %}
  select check_day, check_name, event_name, value, threshold, events
  from {{ model }}
  where check_name = '{{ check_name }}' and status = 'alert'
{% endtest %}

{# Every group's column sums to `total` (within 1e-9). #}
{% test tg_sums_to(model, column_name, group_by, total=1) %}
  select {{ group_by | join(', ') }}, sum({{ column_name }}) as total
  from {{ model }}
  group by {{ group_by | join(', ') }}
  having abs(sum({{ column_name }}) - {{ total }}) > 1e-9
{% endtest %}
