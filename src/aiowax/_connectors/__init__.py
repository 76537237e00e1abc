"""Implementations of the built-in connectors."""
