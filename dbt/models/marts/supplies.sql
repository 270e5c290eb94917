-- What each product consumes. A supply id repeats across products, so the key is
-- supply_id + product_id.
select
    supply_id,
    product_id,
    supply_name,
    supply_cost,
    is_perishable_supply

from {{ source('cleansed', 'supplies') }}
