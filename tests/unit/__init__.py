"""Fast tests of pure functions and small objects: no servers, no training beyond a toy model."""
