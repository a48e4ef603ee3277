"""Data stage (rules/data.smk, scripts/data_*.py): the synthetic fleet, ingest of local files,
row validation, hourly resampling, quality tables, the history cut and model-ready features."""
