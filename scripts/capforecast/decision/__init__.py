"""Decision stage (rules/decision.smk, scripts/decision_*.py): the risk report's calls scored
against the actuals after `data.history_end`, next to simple alert rules."""
