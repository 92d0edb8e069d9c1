"""casepilot monitoring."""
