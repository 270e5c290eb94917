-- Shop locations (the source calls them stores).
select
    location_id,
    location_name,
    tax_rate,
    opened_at

from {{ source('cleansed', 'stores') }}
