"""casepilot flows."""
