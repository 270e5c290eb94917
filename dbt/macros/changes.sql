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

{# Drop the rows an incremental build rebuilds; `append` then inserts them again. #}
{% macro delete_changed(column, changed) -%}
    {% if is_incremental() %}
        delete from {{ this }} where {{ column }} in (select {{ column }} from {{ changed }})
    {% endif %}
{%- endmacro %}
