{# The person (tg_identities) of the events aliased `e`: its lead's, else
   its user's, else its device's. Use tg_person_joins('e') in the FROM
   clause and tg_person_id() in the select list. #}
{% macro tg_person_joins(e) %}
  left join {{ ref('tg_identities') }} as person_lead
    on person_lead.identifier_type = 'lead' and person_lead.identifier = {{ e }}.lead_id
  left join {{ ref('tg_identities') }} as person_user
    on person_user.identifier_type = 'user' and person_user.identifier = {{ e }}.user_id
  left join {{ ref('tg_identities') }} as person_device
    on person_device.identifier_type = 'device' and person_device.identifier = {{ e }}.device_id
{% endmacro %}

{% macro tg_person_id() -%}
  coalesce(person_lead.person_id, person_user.person_id, person_device.person_id)
{%- endmacro %}

{# Conversions: what a form post that the app confirmed emits (origin proxy,
   neither a landing nor a form attempt), as in `touchgate report`. #}
{% macro tg_is_conversion(e) -%}
  ({{ e }}.origin = 'proxy' and {{ e }}.event_name not in ('landing', 'form_attempt'))
{%- endmacro %}
