-- Revenue per location per UTC day, from every order (all_orders(): also during an
-- incremental build of the orders mart, which then holds only the rebuilt rows).
-- Incremental: rebuilds only the days whose orders changed (changed_order_days()), read
-- from the orders of those days alone.
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook="{{ delete_changed_days('order_date') }}",
) }}

{% set days = changed_order_days() %}

with

orders as (
    select * from {{ all_orders() }}
    {% if days is not none %}
    where {{ on_days('ordered_at', days) }}
    {% endif %}
)

select
    location_id,
    cast(timezone('UTC', ordered_at) as date) as order_date,
    count(*) as order_count,
    cast(sum(subtotal) as decimal(18, 2)) as revenue_pretax,
    cast(sum(order_total) as decimal(18, 2)) as revenue_total,
    count(*) filter (where is_food_order) as food_order_count,
    count(*) filter (where is_drink_order) as drink_order_count

from orders
group by location_id, order_date
