"""Bytewax 0.17.2 code run by aiowax (a package, so its conftest has a name of its own)."""
