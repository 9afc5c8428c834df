"""Matchers of descriptors."""
