{#- Use a model's custom schema as given ("marts", not "main_marts"): Dagster reads
    models from fixed schemas when it publishes them to Delta. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}{{ target.schema }}{%- else -%}{{ custom_schema_name | trim }}{%- endif -%}
{%- endmacro %}
