"""``python -m bench NAME [--quick] [--out DIR]``."""

from adloop.cli.bench import app

if __name__ == "__main__":
    app(prog_name="python -m bench")
