"""Benchmarks, run as ``python -m bench NAME`` or ``adloop bench NAME``."""
