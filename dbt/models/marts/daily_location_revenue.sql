-- Revenue per location per UTC day, from every order (all_orders(): also during an
-- incremental build of the orders mart, which then holds only the rebuilt rows).
with

orders as (
    select * from {{ all_orders() }}
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
