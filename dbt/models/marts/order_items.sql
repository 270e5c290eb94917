-- One row per item on an order, with what the product sells for and what it costs to make.
-- Incremental: rebuilds the items of the orders to rebuild (changed_orders()).
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook="{{ delete_changed('order_id', changed_orders()) }}",
) }}

with

items as (
    select order_item_id, order_id, product_id from {{ cleansed_rows('items') }}
    {% if rebuilding_changed() %}
    where order_id in (select order_id from {{ changed_orders() }})
    {% endif %}
),

orders as (
    select order_id, ordered_at from {{ cleansed_rows('orders') }}
    {% if rebuilding_changed() %}
    where order_id in (select order_id from {{ changed_orders() }})
    {% endif %}
),

products as (
    select product_id, product_price, is_food_item, is_drink_item
    from {{ source('cleansed', 'products') }}
),

product_supply_costs as (
    select product_id, sum(supply_cost) as supply_cost
    from {{ source('cleansed', 'supplies') }}
    group by product_id
)

select
    items.order_item_id,
    items.order_id,
    items.product_id,
    orders.ordered_at,
    products.product_price,
    cast(coalesce(product_supply_costs.supply_cost, 0) as decimal(18, 2)) as supply_cost,
    coalesce(products.is_food_item, false) as is_food_item,
    coalesce(products.is_drink_item, false) as is_drink_item

from items
left join orders on items.order_id = orders.order_id
left join products on items.product_id = products.product_id
left join product_supply_costs on items.product_id = product_supply_costs.product_id
