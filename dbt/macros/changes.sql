{#
  Incremental builds of the keyed marts (orders, order_items, customers). Dagster writes
  the customers whose rows changed since the published marts were built, and the orders
  to rebuild (those whose own rows or items changed, and the later orders of their
  customers, before and now), into these tables of the run's scratch DuckDB
  (lakehouse/increments.py); a model rebuilds exactly those rows. A full build
  (`--full-refresh`, or no published marts yet) never reads them.
#}

{% macro changed_customers() -%}
    lakehouse_changes.customers
{%- endmacro %}

{% macro changed_orders() -%}
    lakehouse_changes.orders
{%- endmacro %}

{# An incremental run with the changes written: only then are the changed rows rebuilt. #}
{% macro rebuilding_changed() -%}
    {%- if not (execute and is_incremental()) -%}
        {{ return(false) }}
    {%- endif -%}
    {{ return(scratch_holds('lakehouse_changes', 'customers')) }}
{%- endmacro %}

{# Whether the run's scratch database holds this relation (written by Dagster). #}
{% macro scratch_holds(schema, identifier) -%}
    {%- set relation = adapter.get_relation(
        database=this.database, schema=schema, identifier=identifier
    ) -%}
    {{ return(relation is not none) }}
{%- endmacro %}

{#
  Drop the rows an incremental build rebuilds; `append` then inserts them again. Run by
  hand on a database holding the tables but not the changes (dbt without Dagster), an
  incremental run drops every row and rebuilds them all: never a row twice.
#}
{% macro delete_changed(column, changed) -%}
    {% if is_incremental() %}
        delete from {{ this }}
        {% if rebuilding_changed() %}
        where {{ column }} in (select {{ column }} from {{ changed }})
        {% endif %}
    {% endif %}
{%- endmacro %}

{#
  Every row of the orders mart, for a model that reads beyond the rebuilt orders
  (daily_location_revenue, customers). In an incremental build the orders mart holds only
  the rebuilt orders until Dagster assembles it after dbt, so this reads what the mart
  will then be: the other published orders plus the rebuilt ones. Otherwise it is the
  model itself.
#}
{% macro all_orders() -%}
    {%- if increment_loaded() -%}
    (
        select * from lakehouse_published.orders
        where not coalesce(order_id in (select order_id from {{ changed_orders() }}), false)
        union all by name
        select * from {{ ref('orders') }}
    )
    {%- else -%}
    {{ ref('orders') }}
    {%- endif -%}
{%- endmacro %}

{# The run's scratch database holds the changes and the published keyed marts (an
   incremental build, not a full refresh): what the incremental models rebuild from. #}
{% macro increment_loaded() -%}
    {%- if not execute or flags.FULL_REFRESH -%}
        {{ return(false) }}
    {%- endif -%}
    {{ return(
        scratch_holds('lakehouse_changes', 'customers')
        and scratch_holds('lakehouse_published', 'orders')
    ) }}
{%- endmacro %}

{#
  The UTC days whose orders an incremental build changed, as a sorted list of ISO dates,
  for a model that aggregates orders by day (daily_location_revenue): the days of every
  order the rebuilt orders mart adds, drops or changes in a column a day's figures read.
  None when the model is built in full (no increment loaded, or no published rows of the
  model to add to). Read at execution, so the days are constants: the orders of other
  days are never read (the orders mart is sorted by time, so DuckDB skips their files).
#}
{% macro changed_order_days() -%}
    {%- if not (execute and is_incremental() and increment_loaded()) -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set columns = 'order_id, location_id, ordered_at, subtotal, order_total, is_food_order, is_drink_order' -%}
    {%- set query -%}
        with
        before as (select {{ columns }} from lakehouse_before.orders),
        now as (select {{ columns }} from {{ ref('orders') }}),
        changed as (
            (select * from before except all select * from now)
            union all
            (select * from now except all select * from before)
        )
        select distinct strftime(cast(timezone('UTC', ordered_at) as date), '%Y-%m-%d')
        from changed
        order by 1
    {%- endset -%}
    {{ return(run_query(query).columns[0].values() | list) }}
{%- endmacro %}

{# Rows of these UTC days (ISO dates): a range first, which skips other days' files. #}
{% macro on_days(column, days) -%}
    {%- if days | length == 0 -%}
    false
    {%- else -%}
    {{ column }} >= timestamptz '{{ days[0] }} 00:00:00+00'
    and {{ column }} < timestamptz '{{ days[-1] }} 00:00:00+00' + interval 1 day
    and cast(timezone('UTC', {{ column }}) as date) in (
        {%- for day in days %}date '{{ day }}'{{ ", " if not loop.last }}{% endfor -%}
    )
    {%- endif -%}
{%- endmacro %}

{# Drop the rows of the days an incremental build rebuilds; `append` inserts them again. #}
{% macro delete_changed_days(column) -%}
    {% set days = changed_order_days() %}
    {% if days is not none %}
        delete from {{ this }} where {{ column }} in (
            {%- for day in days %}date '{{ day }}'{{ ", " if not loop.last }}{% endfor -%}
            {%- if days | length == 0 %}null{% endif -%}
        )
    {% elif is_incremental() %}
        delete from {{ this }}
    {% endif %}
{%- endmacro %}

{#
  A large cleansed table whose rows name their order (orders, items), for a model that
  reads only the orders to rebuild: in an incremental build, the rows Dagster prepared
  from the files that may hold those orders (lakehouse_changes.cleansed_<table>);
  otherwise the source itself, which also records the dependency dbt and Dagster see.
#}
{% macro cleansed_rows(table) -%}
    {%- set whole = source('cleansed', table) -%}
    {%- if rebuilding_changed() and scratch_holds('lakehouse_changes', 'cleansed_' ~ table) -%}
    lakehouse_changes.cleansed_{{ table }}
    {%- else -%}
    {{ whole }}
    {%- endif -%}
{%- endmacro %}
