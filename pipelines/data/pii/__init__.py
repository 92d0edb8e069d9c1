"""PII internals: normalisation, Presidio engines, the name recognizer, file scanning.

The redaction API is `pipelines.data.redact`; this package holds what it is built from
(`normalize`, `engine`, `names`) and the on-disk check: `scan.scan_home(root, planted=…)` with
the fast detectors of `detectors` and the planted values of a synthetic world recomputed from its
manifest (`world_planted.planted_values`). `casepilot pii scan` is the command line.
"""
