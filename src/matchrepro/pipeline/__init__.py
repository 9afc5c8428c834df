"""Workflow steps (each one a CLI verb): extract features, match pairs, evaluate, tabulate."""
