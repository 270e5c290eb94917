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
    {%- set changes = adapter.get_relation(
        database=this.database, schema='lakehouse_changes', identifier='customers'
    ) -%}
    {{ return(changes is not none) }}
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
