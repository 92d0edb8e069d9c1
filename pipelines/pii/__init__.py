"""PII detection internals: Presidio engines and the offline name recognizer.

The public API is `pipelines.redact`; this package holds what it is built from.
"""
