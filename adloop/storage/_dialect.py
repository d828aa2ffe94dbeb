"""Where DuckDB and PostgreSQL spell the store's shared statements differently, and nowhere else.

The store's parts write their SQL once, with ``?`` (positional) or ``$name`` (named)
parameters as DuckDB takes them; the PostgreSQL backend rewrites the placeholders
(:func:`to_pyformat`) and fills these few fragments with its own spelling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Dialect:
    """How one SQL engine spells the fragments the shared statements need."""

    name: str
    """The engine, in words."""
    double: str
    """The 64-bit float type, for casts."""
    epoch: str
    """Seconds since 1970 (a float) of the TIMESTAMP expression ``{}``."""
    finite: str
    """True when the float expression ``{}`` is neither NaN nor infinite."""
    in_list: str
    """True when the column ``{}`` is one of a list parameter (``?``)."""
    exponent: str
    """The exponent ``{}`` of a time-discount weight, bounded where ``pow`` would underflow."""


DUCKDB = Dialect(
    name="duckdb",
    double="DOUBLE",
    epoch="epoch_us({}) / 1e6",
    finite="isfinite({})",
    in_list="list_contains(?, {})",
    exponent="{}",
)

POSTGRES = Dialect(
    name="postgresql",
    double="DOUBLE PRECISION",
    epoch="extract(epoch FROM {})::DOUBLE PRECISION",
    finite="({} NOT IN ('NaN', 'Infinity', '-Infinity'))",
    in_list="{} = ANY(?)",
    # PostgreSQL raises on a float underflow (DuckDB returns 0); 2**-1000 is 0 to any sum.
    exponent="greatest(-1000.0, {})",
)

# A quoted literal, or a placeholder: ``?`` or ``$name`` (named ``$1`` forms are not used).
_TOKEN = re.compile(r"'(?:[^']|'')*'|\?|\$([A-Za-z_]\w*)|%")


def to_pyformat(sql: str) -> str:
    """``sql`` with DuckDB's placeholders as psycopg's (``?`` -> ``%s``, ``$x`` -> ``%(x)s``).

    Example:
        >>> to_pyformat("SELECT '?', ? WHERE a = $c AND b LIKE 'x%'")
        "SELECT '?', %s WHERE a = %(c)s AND b LIKE 'x%%'"
    """

    def replace(match: re.Match) -> str:
        token = match.group(0)
        if token == "?":
            return "%s"
        if token == "%":
            return "%%"
        if match.group(1):
            return f"%({match.group(1)})s"
        return token.replace("%", "%%")

    return _TOKEN.sub(replace, sql)
