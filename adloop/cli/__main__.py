"""``python -m adloop.cli`` is the same as ``adloop``."""

from adloop.cli import main

main()
