"""Switch serving to a newly promoted model version without a request seeing half of it.

:class:`ServingModel` follows the store's promoted version; :func:`switch_pool_model` points
a running :class:`adloop.generators.GeneratorPool` at a new model directory. Both load the new
model first and then swap it in with one assignment.

Example::

    retrain_round(engine.store, on_promote=lambda m: switch_pool_model(engine.pool, m["path"]))
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from adloop.generators import LMGenerator

__all__ = ["ServingModel", "switch_pool_model"]


class ServingModel:
    """The generator for the promoted version, switched atomically between requests.

    :meth:`sync` reads the promoted version from the store; when it changed, it loads the
    new model *first* and then replaces the (version, generator) pair in one assignment,
    so a request always sees one whole version, old or new, never a mix.

    Example::

        serving = ServingModel(store)
        serving.sync()
        version, generator = serving.current
    """

    def __init__(self, store: Any, *, loader: Callable[[str], Any] | None = None) -> None:
        self.store = store
        self.loader = loader
        self._current: tuple[str | None, Any] = (None, None)

    @property
    def current(self) -> tuple[str | None, Any]:
        """(version, generator) in use; (None, None) before the first sync."""
        return self._current

    def sync(self) -> bool:
        """Switch to the promoted version if it changed; True when a switch happened."""
        record = self.store.current_model()
        if record is None or record["version"] == self._current[0]:
            return False
        loader = self.loader or LMGenerator
        generator = loader(record["path"])
        self._current = (record["version"], generator)
        return True


def switch_pool_model(pool: Any, model_dir: str | Path) -> bool:
    """Point a ``GeneratorPool``'s language-model generator at ``model_dir``; True if it had one.

    The new model is loaded *before* the swap, and the swap is one list-item assignment, so
    a concurrent ``pool.generate`` uses either the old or the new model, never a half-loaded
    one. Sampling settings (temperature, top-p, batch size, ...) carry over.

    Example::

        retrain_round(engine.store, on_promote=lambda m: switch_pool_model(engine.pool, m["path"]))
    """
    generators = getattr(pool, "generators", None)
    if generators is None:
        return False
    switched = False
    for index, old in enumerate(list(generators)):
        if not isinstance(old, LMGenerator):
            continue
        new = LMGenerator(
            model_dir,
            temperature=old.temperature,
            top_p=old.top_p,
            batch_size=old.batch_size,
            max_new_tokens=old.max_new_tokens,
            device=old.device,
            num_threads=old.num_threads,
            rerank=old.rerank,
        )
        new.load()
        generators[index] = new
        switched = True
    return switched
