"""Per-stage training, evaluation and loading; the Stage protocol, the cascade, quantization."""
