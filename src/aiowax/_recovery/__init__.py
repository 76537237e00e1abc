"""Implementation of `aiowax.recovery`: snapshots in SQLite partition files."""
