{#
  The events as they arrived, copies included, one row per copy, with the
  columns every model reads. Timestamps are UTC without a time zone, so that
  days and differences mean the same on every adapter. `arrived_at` is when
  the warehouse had the copy (becomes tg_events.loaded_at); `copy_order`
  breaks ties between copies received at the same instant.
#}
{% macro tg_raw_events() %}
  {{ return(adapter.dispatch('tg_raw_events', 'touchgate')()) }}
{% endmacro %}

{# DuckDB: the file sink's JSON lines, read straight from disk: every file
   of var events_glob on every run, where lines whose event_id tg_events
   already has add nothing. A line that does not parse (one being written
   while dbt reads the live file) is skipped this run and loaded by the
   next: tg_events adds every event_id it does not have yet, whenever it
   shows up. #}
{% macro duckdb__tg_raw_events() %}
  {%- set touch = 'STRUCT(source VARCHAR, medium VARCHAR, campaign VARCHAR, term VARCHAR, content VARCHAR, click_id_type VARCHAR, channel VARCHAR, channel_ga4 VARCHAR, valid BOOLEAN' -%}
  {%- set columns = {
      'event_id': 'VARCHAR',
      'event_name': 'VARCHAR',
      'origin': 'VARCHAR',
      'occurred_at': 'TIMESTAMP',
      'received_at': 'TIMESTAMP',
      'device_id': 'VARCHAR',
      'session_id': 'VARCHAR',
      'user_id': 'VARCHAR',
      'lead_id': 'VARCHAR',
      'touchpoint_id': 'VARCHAR',
      'natural_key': 'VARCHAR',
      'page': 'STRUCT(url VARCHAR, path VARCHAR, referrer_host VARCHAR)',
      'touch': touch ~ ')',
      'first_touch': touch ~ ', "at" TIMESTAMP)',
      'last_touch': touch ~ ', "at" TIMESTAMP)',
      'client': 'STRUCT(context JSON)',
      'status': 'INTEGER',
      'properties': 'JSON',
  } -%}
  {%- set globs = var('events_glob') -%}
  {%- if globs is string %}{% set globs = [globs] %}{% endif -%}
  select
    event_id,
    event_name,
    origin,
    occurred_at,
    received_at,
    device_id,
    session_id,
    user_id,
    lead_id,
    touchpoint_id,
    natural_key,
    page.url as page_url,
    page.path as page_path,
    page.referrer_host as referrer_host,
    touch.channel as channel,
    touch.channel_ga4 as channel_ga4,
    touch.source as source,
    touch.medium as medium,
    touch.campaign as campaign,
    touch.term as term,
    touch.content as content,
    touch.click_id_type as click_id_type,
    touch.valid as touch_valid,
    first_touch.channel as first_channel,
    first_touch.source as first_source,
    first_touch.medium as first_medium,
    first_touch.campaign as first_campaign,
    first_touch.valid as first_valid,
    first_touch."at" as first_at,
    last_touch.channel as last_channel,
    last_touch.source as last_source,
    last_touch.medium as last_medium,
    last_touch.campaign as last_campaign,
    last_touch.valid as last_valid,
    last_touch."at" as last_at,
    status,
    json_extract_string(client.context, '$.cid') as client_cid,
    cast(properties as varchar) as properties,
    filename as source_file,
    filename as copy_order,
    {{ tg_now_utc() }} as arrived_at
  from read_json(
    [{% for g in globs %}'{{ g | replace("'", "''") }}'{% if not loop.last %}, {% endif %}{% endfor %}],
    format = 'newline_delimited',
    filename = true,
    ignore_errors = true,
    columns = { {%- for name, type in columns.items() %}{{ name }}: '{{ type }}'{% if not loop.last %}, {% endif %}{% endfor -%} }
  )
  where event_id is not null and occurred_at is not null
{% endmacro %}

{# PostgreSQL: the postgres sink's table (deploy/warehouse/postgres_table.sql):
   one row per event_id already, its columns plus the whole event in
   `payload`; `inserted_at` is when the warehouse had it. #}
{% macro postgres__tg_raw_events() %}
  select
    event_id,
    event_name,
    origin,
    (occurred_at at time zone 'UTC') as occurred_at,
    (received_at at time zone 'UTC') as received_at,
    device_id,
    session_id,
    user_id,
    lead_id,
    touchpoint_id,
    natural_key,
    payload->'page'->>'url' as page_url,
    page_path,
    payload->'page'->>'referrer_host' as referrer_host,
    channel,
    payload->'touch'->>'channel_ga4' as channel_ga4,
    source,
    medium,
    campaign,
    payload->'touch'->>'term' as term,
    payload->'touch'->>'content' as content,
    click_id_type,
    valid as touch_valid,
    first_channel,
    payload->'first_touch'->>'source' as first_source,
    payload->'first_touch'->>'medium' as first_medium,
    payload->'first_touch'->>'campaign' as first_campaign,
    (payload->'first_touch'->>'valid')::boolean as first_valid,
    ((payload->'first_touch'->>'at')::timestamptz at time zone 'UTC') as first_at,
    last_channel,
    last_source,
    last_medium,
    last_campaign,
    (payload->'last_touch'->>'valid')::boolean as last_valid,
    ((payload->'last_touch'->>'at')::timestamptz at time zone 'UTC') as last_at,
    status,
    payload->'client'->'context'->>'cid' as client_cid,
    (payload->'properties')::text as properties,
    cast(null as text) as source_file,
    '' as copy_order,
    (inserted_at at time zone 'UTC') as arrived_at
  from {{ source('touchgate', 'events') }}
{% endmacro %}

{% macro default__tg_raw_events() %}
  {{ exceptions.raise_compiler_error(
      "touchgate: no tg_raw_events for adapter '" ~ adapter.type() ~ "'. "
      ~ "Add a macro " ~ adapter.type() ~ "__tg_raw_events that selects the columns of "
      ~ "postgres__tg_raw_events from your events table; every model reads only those.") }}
{% endmacro %}
