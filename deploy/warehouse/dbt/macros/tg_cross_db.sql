{# The few expressions dbt's cross-database macros do not cover. #}

{# Now, UTC, without a time zone. #}
{% macro tg_now_utc() %}{{ return(adapter.dispatch('tg_now_utc', 'touchgate')()) }}{% endmacro %}
{% macro duckdb__tg_now_utc() %}cast(timezone('UTC', now()) as timestamp){% endmacro %}
{% macro postgres__tg_now_utc() %}(now() at time zone 'UTC'){% endmacro %}
{% macro bigquery__tg_now_utc() %}current_datetime('UTC'){% endmacro %}
{% macro snowflake__tg_now_utc() %}sysdate(){% endmacro %}
{% macro default__tg_now_utc() %}current_timestamp{% endmacro %}

{# Seconds since the Unix epoch, with the fraction, as a double. #}
{% macro tg_epoch_seconds(ts) %}{{ return(adapter.dispatch('tg_epoch_seconds', 'touchgate')(ts)) }}{% endmacro %}
{% macro duckdb__tg_epoch_seconds(ts) %}epoch({{ ts }}){% endmacro %}
{% macro postgres__tg_epoch_seconds(ts) %}cast(extract(epoch from {{ ts }}) as double precision){% endmacro %}
{% macro bigquery__tg_epoch_seconds(ts) %}(unix_micros(timestamp({{ ts }})) / 1e6){% endmacro %}
{% macro snowflake__tg_epoch_seconds(ts) %}(date_part(epoch_microsecond, {{ ts }}) / 1e6){% endmacro %}
{% macro default__tg_epoch_seconds(ts) %}cast(extract(epoch from {{ ts }}) as double precision){% endmacro %}

{# The continuous percentile p (0..1) of x, as an aggregate. #}
{% macro tg_percentile(x, p) %}{{ return(adapter.dispatch('tg_percentile', 'touchgate')(x, p)) }}{% endmacro %}
{% macro bigquery__tg_percentile(x, p) %}approx_quantiles({{ x }}, 1000)[offset({{ (p * 1000) | int }})]{% endmacro %}
{% macro default__tg_percentile(x, p) %}percentile_cont({{ p }}) within group (order by {{ x }}){% endmacro %}

{# A 64-bit float (dbt.type_float() is 32 bits on DuckDB). #}
{% macro tg_type_double() %}{{ return(adapter.dispatch('tg_type_double', 'touchgate')()) }}{% endmacro %}
{% macro duckdb__tg_type_double() %}double{% endmacro %}
{% macro bigquery__tg_type_double() %}float64{% endmacro %}
{% macro default__tg_type_double() %}double precision{% endmacro %}
