"""The cascade stages: trigger, topic, retrieve, answer, tone (one module each)."""
