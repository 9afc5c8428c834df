"""Readers of the real on-disk dataset formats (the demo builders write the same formats)."""
