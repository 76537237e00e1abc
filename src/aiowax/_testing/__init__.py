"""Implementation of `aiowax.testing`."""
