"""Metrics (pure functions) and one module per evaluation protocol."""
