"""Dagster definitions, one module per concern: resources, landing, raw, cleansed, marts, jobs."""
