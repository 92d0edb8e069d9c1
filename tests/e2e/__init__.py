"""The whole loop end to end: `casepilot demo` on a tiny world."""
