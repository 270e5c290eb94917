{#
  Incremental builds of the keyed marts (orders, order_items, customers). Dagster writes
  the customers whose rows changed since the published marts were built, and every order
  of theirs before and now, into these tables of the run's scratch DuckDB
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
  Every row of the orders mart, for a model that reads it whole (daily_location_revenue).
  In an incremental build the orders mart holds only the rebuilt customers' rows until
  Dagster assembles it after dbt, so this reads what the mart will then be: the published
  rows of the other customers plus the rebuilt ones. Otherwise it is the model itself.
#}
{% macro all_orders() -%}
    {%- if increment_loaded() -%}
    (
        select * from lakehouse_published.orders
        where not coalesce(customer_id in (select customer_id from {{ changed_customers() }}), false)
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
