"""The cascade stages: trigger, topic, retrieve, answer, tone (one module each).

`base.Stage` is what every stage implements; `registry.get_stage(name)` finds one by name.
"""
