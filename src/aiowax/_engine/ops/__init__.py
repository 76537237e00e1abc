"""Operators: one step's logic on one worker, by family (see `base` for the lifecycle)."""
