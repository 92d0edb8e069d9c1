"""The scenario suite (issue 15): written scenarios as YAML, persona messages, checks, the gate.

schema.py (load + validate), generate.py (persona messages), checks.py (one outcome vs its
expectations), runner.py (the suite through a cascade → report), gate.py (the `challenger` gate
in `register_stage`, and `scenario_rates` for summaries), record.py (MLflow), build_default.py
(wrote the default suite in `scenarios/`).
"""
