"""Reports stage (rules/reports.smk, scripts/reports_render.py): helpers of the report notebooks
and their offline HTML export."""
