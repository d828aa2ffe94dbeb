"""A minimal Prometheus text-format registry: counters, gauges and latency histograms.

Small on purpose (no client library dependency): the service needs a handful of series,
and the request path pays one dict lookup and one bisect per observation.

Series labelled with an identifier (:data:`IDENTIFYING_LABELS`: a campaign, variant,
segment or tenant) belong to one tenant; :meth:`Registry.render` takes a ``visible``
predicate so a scrape shows only the identifiers its caller may see.

Example::

    registry = Registry()
    hits = registry.counter("adloop_hits_total", "Hits.", ("route",))
    hits.inc(route="/v1/choose")
    print(registry.render())
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence

__all__ = ["IDENTIFYING_LABELS", "LATENCY_BUCKETS", "Counter", "Gauge", "Histogram", "Registry"]

#: Labels whose values identify something of one tenant's: a series carrying one is rendered
#: only for callers allowed to see that value (see :meth:`Registry.render`).
IDENTIFYING_LABELS = frozenset({"campaign_id", "variant_id", "segment", "tenant"})

#: ``visible(label, value)``: may this scrape show the series labelled ``label=value``?
Visible = Callable[[str, str], bool]

LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(str(v))}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.label_names = tuple(label_names)
        self._identifying = [
            (i, n) for i, n in enumerate(self.label_names) if n in IDENTIFYING_LABELS
        ]

    def _shown(self, key: tuple[str, ...], visible: Visible | None) -> bool:
        """Whether the series ``key`` may be rendered for a scrape limited by ``visible``."""
        if visible is None or not self._identifying:
            return True
        return all(visible(name, key[i]) for i, name in self._identifying)

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        return tuple(str(labels[n]) for n in self.label_names)

    def _series(self, values: dict[tuple[str, ...], float], visible: Visible | None) -> list[str]:
        """One exposition line per series of ``values`` that ``visible`` lets through."""
        return [
            f"{self.name}{_labels(self.label_names, k)} {_number(v)}"
            for k, v in sorted(values.items())
            if self._shown(k, visible)
        ]

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    """A monotonically increasing count, optionally labelled."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, label_names)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` (>= 0) to the series named by ``labels``."""
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        """The current value of one series."""
        return self._values.get(self._key(labels), 0.0)

    def lines(self, visible: Visible | None = None) -> list[str]:
        return self._series(self._values, visible)


class Gauge(_Metric):
    """A value read at scrape time from a callback returning ``{labels tuple: value}``."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        help_text: str,
        read: Callable[[], dict[tuple[str, ...], float] | float],
        label_names: Sequence[str] = (),
        kind: str = "gauge",
    ) -> None:
        super().__init__(name, help_text, label_names)
        self._read = read
        # a value kept elsewhere (e.g. the engine's decision count) may be exposed as a counter
        self.kind = kind

    def lines(self, visible: Visible | None = None) -> list[str]:
        values = self._read()
        if not isinstance(values, dict):
            values = {(): values}
        return self._series(values, visible)


class Histogram(_Metric):
    """Cumulative-bucket histogram of observations (seconds for latencies)."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        label_names: Sequence[str] = (),
        buckets: Iterable[float] = LATENCY_BUCKETS,
    ) -> None:
        super().__init__(name, help_text, label_names)
        self.buckets = tuple(sorted(buckets))
        self._series: dict[tuple[str, ...], list[float]] = {}

    def observe(self, value: float, **labels: str) -> None:
        """Record one observation."""
        key = self._key(labels)
        series = self._series.get(key)
        if series is None:
            # one slot per bucket, one for +Inf, then the sum
            series = self._series.setdefault(key, [0.0] * (len(self.buckets) + 2))
        series[bisect_left(self.buckets, value)] += 1
        series[-1] += value

    def count(self, **labels: str) -> int:
        """Number of observations in one series."""
        series = self._series.get(self._key(labels))
        return int(sum(series[:-1])) if series else 0

    def lines(self, visible: Visible | None = None) -> list[str]:
        out = []
        for key, series in sorted(self._series.items()):
            if not self._shown(key, visible):
                continue
            running = 0.0
            for bound, n in zip(self.buckets, series, strict=False):
                running += n
                le = 'le="' + _number(bound) + '"'
                out.append(
                    f"{self.name}_bucket{_labels(self.label_names, key, le)} {_number(running)}"
                )
            running += series[len(self.buckets)]
            le = 'le="+Inf"'
            out.append(f"{self.name}_bucket{_labels(self.label_names, key, le)} {_number(running)}")
            out.append(f"{self.name}_sum{_labels(self.label_names, key)} {_number(series[-1])}")
            out.append(f"{self.name}_count{_labels(self.label_names, key)} {_number(running)}")
        return out


class Registry:
    """A set of metrics rendered together in the Prometheus text exposition format 0.0.4."""

    content_type = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(self) -> None:
        self._metrics: list[_Metric] = []
        self._lock = threading.Lock()

    def _add(self, metric: _Metric) -> _Metric:
        with self._lock:
            self._metrics.append(metric)
        return metric

    def counter(self, name: str, help_text: str, label_names: Sequence[str] = ()) -> Counter:
        """Register and return a counter."""
        return self._add(Counter(name, help_text, label_names))  # type: ignore[return-value]

    def gauge(
        self,
        name: str,
        help_text: str,
        read: Callable[[], dict[tuple[str, ...], float] | float],
        label_names: Sequence[str] = (),
        *,
        kind: str = "gauge",
    ) -> Gauge:
        """Register and return a gauge (or ``kind="counter"``) read from ``read`` at scrape time."""
        return self._add(Gauge(name, help_text, read, label_names, kind))  # type: ignore[return-value]

    def histogram(
        self,
        name: str,
        help_text: str,
        label_names: Sequence[str] = (),
        buckets: Iterable[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        """Register and return a histogram."""
        return self._add(Histogram(name, help_text, label_names, buckets))  # type: ignore[return-value]

    def render(self, visible: Visible | None = None) -> str:
        """All metrics as Prometheus text.

        ``visible(label, value)`` limits the series labelled with an identifier
        (:data:`IDENTIFYING_LABELS`) to those it allows; None renders every series.
        """
        lines: list[str] = []
        for metric in list(self._metrics):
            lines.extend(metric.header())
            lines.extend(metric.lines(visible))
        return "\n".join(lines) + "\n"
