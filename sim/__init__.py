"""adloop sim package (public surface named in __all__)."""

__all__: list[str] = []
