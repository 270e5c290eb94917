-- One row per order: amounts, what its items cost, what kind of order it is, and where it
-- falls in its customer's history. Incremental: rebuilds the changed orders and the later
-- orders of their customers (changed_orders()), numbered within each customer's whole
-- history.
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook="{{ delete_changed('order_id', changed_orders()) }}",
) }}

with

orders as (
    select order_id, customer_id, location_id, ordered_at, subtotal, tax_paid, order_total
    from {{ cleansed_rows('orders') }}
    {% if rebuilding_changed() %}
    where order_id in (select order_id from {{ changed_orders() }})
    {% endif %}
),

order_items as (
    select * from {{ ref('order_items') }}
),

order_items_summary as (
    select
        order_id,
        sum(supply_cost) as order_cost,
        count(*) filter (where is_food_item) as count_food_items,
        count(*) filter (where is_drink_item) as count_drink_items
    from order_items
    group by order_id
),

compute_booleans as (
    select
        orders.*,
        cast(coalesce(order_items_summary.order_cost, 0) as decimal(18, 2)) as order_cost,
        coalesce(order_items_summary.count_food_items, 0) as count_food_items,
        coalesce(order_items_summary.count_drink_items, 0) as count_drink_items
    from orders
    left join order_items_summary on orders.order_id = order_items_summary.order_id
),

{% if rebuilding_changed() %}
-- the place of each rebuilt order among all of its customer's orders (three columns read)
history as (
    select
        order_id,
        row_number() over (partition by customer_id order by ordered_at, order_id) as customer_order_number
    from {{ source('cleansed', 'orders') }}
    where customer_id in (select customer_id from orders)
),
{% endif %}

numbered as (
    select
        compute_booleans.*,
        count_food_items > 0 as is_food_order,
        count_drink_items > 0 as is_drink_order,
        {% if rebuilding_changed() %}
        history.customer_order_number
        {% else %}
        row_number() over (partition by customer_id order by ordered_at, order_id) as customer_order_number
        {% endif %}
    from compute_booleans
    {% if rebuilding_changed() %}
    left join history on compute_booleans.order_id = history.order_id
    {% endif %}
)

select * from numbered
