"""Ready-made sources and sinks."""

__all__: list[str] = []
