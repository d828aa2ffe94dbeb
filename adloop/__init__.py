"""adloop: ad copy written by language models, and learning which copy wins from real outcomes.

The packages, from the leaves up (each names its public surface in ``__all__``):

- :mod:`adloop.bandits` -- Thompson sampling and the stopping rule (numpy/scipy only);
- :mod:`adloop.storage` -- the DuckDB store: campaigns, variants, the append-only event log;
- :mod:`adloop.generators` -- briefs, candidate generators, filters, training and the copy scorer;
- :mod:`adloop.optimizer` -- the engine, HTTP service, retraining and the scheduler;
- :mod:`adloop.sim` -- the campaign simulator, which drives the engine as an ad server would;
- :mod:`adloop.cli` -- the ``adloop`` command line, on top of all of them.

Importing ``adloop`` imports none of them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("adloop")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
