"""casepilot bentos."""
