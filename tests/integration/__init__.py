"""Real servers and real Prefect / MLflow / DVC / BentoML / Label Studio processes."""
