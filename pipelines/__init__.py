"""casepilot pipelines."""
