-- One row per customer (with how often they ordered and tweeted), including those who never ordered (with zero counts and amounts).
-- Names appear only as the keyed pseudonym and the masked display form.
-- Incremental: rebuilds the changed customers, from all of their orders (all_orders(): the
-- orders mart holds only the rebuilt orders until Dagster assembles it).
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook="{{ delete_changed('customer_id', changed_customers()) }}",
) }}

with

customers as (
    select customer_id, customer_name_pseudonym, customer_name_masked
    from {{ source('cleansed', 'customers') }}
    {% if rebuilding_changed() %}
    where customer_id in (select customer_id from {{ changed_customers() }})
    {% endif %}
),

orders as (
    select * from {{ all_orders() }}
    {% if rebuilding_changed() %}
    where customer_id in (select customer_id from {{ changed_customers() }})
    {% endif %}
),

customer_orders_summary as (
    select
        customer_id,
        count(*) as count_lifetime_orders,
        min(ordered_at) as first_ordered_at,
        max(ordered_at) as last_ordered_at,
        sum(subtotal) as lifetime_spend_pretax,
        sum(tax_paid) as lifetime_tax_paid,
        sum(order_total) as lifetime_spend
    from orders
    group by customer_id
),

customer_tweets_summary as (
    select customer_id, count(*) as count_lifetime_tweets
    from {{ source('cleansed', 'tweets') }}
    {% if rebuilding_changed() %}
    where customer_id in (select customer_id from {{ changed_customers() }})
    {% endif %}
    group by customer_id
),

joined as (
    select
        customers.*,
        coalesce(summary.count_lifetime_orders, 0) as count_lifetime_orders,
        summary.first_ordered_at,
        summary.last_ordered_at,
        cast(coalesce(summary.lifetime_spend_pretax, 0) as decimal(18, 2)) as lifetime_spend_pretax,
        cast(coalesce(summary.lifetime_tax_paid, 0) as decimal(18, 2)) as lifetime_tax_paid,
        cast(coalesce(summary.lifetime_spend, 0) as decimal(18, 2)) as lifetime_spend,
        coalesce(tweets.count_lifetime_tweets, 0) as count_lifetime_tweets
    from customers
    left join customer_orders_summary as summary on customers.customer_id = summary.customer_id
    left join customer_tweets_summary as tweets on customers.customer_id = tweets.customer_id
)

select
    *,
    case when count_lifetime_orders > 1 then 'returning' else 'new' end as customer_type

from joined
