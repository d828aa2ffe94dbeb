"""``python -m optimizer.cli`` is the same as ``adloop``."""

from optimizer.cli import main

main()
