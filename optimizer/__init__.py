"""adloop optimizer: the engine, HTTP variant-chooser service, scheduler and CLI."""

__all__: list[str] = []
