"""``python -m bench NAME [--quick] [--out DIR]``."""

from optimizer.cli.bench import app

if __name__ == "__main__":
    app(prog_name="python -m bench")
