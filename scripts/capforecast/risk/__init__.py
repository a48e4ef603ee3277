"""Risk stage (rules/risk.smk, scripts/risk_report.py): breach probabilities and ETAs, findings,
the per-service capacity plan and right-sizing."""
