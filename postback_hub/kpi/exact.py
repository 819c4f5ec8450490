"""Revenue as exact integers SQLite can sum natively. Pure.

SQLite has no exact decimal type, and summing decimal text through a Python
aggregate costs a Python call per row. So an amount is stored as whole units
(``floor(amount)``) and nanos (the rest in units of 10^-9, ``0 <= nanos < 10^9``),
two INTEGER columns that ``sum()`` adds in C, exactly. Every amount Adjust sends
with at most 9 decimals and below 10^12 in magnitude fits; anything else (more
decimals, absurd magnitudes) is kept whole as exact decimal text in a third
column that is NULL on every ordinary row, so exactness never depends on the
input being tame.

Bounds: a row's nanos sum grows by less than 10^9 per callback, so it stays
exact up to 9.2 * 10^9 callbacks in one row; units up to 9.2 * 10^18 currency
units. SQLite raises an error rather than wrap on an overflowing ``sum()``.
"""

from __future__ import annotations

from decimal import Decimal

NANOS = 10**9
_MAX_UNITS = 10**12
_ZERO = Decimal(0)


def split(amount: Decimal) -> tuple[int, int, str | None]:
    """``amount`` as (units, nanos, rest): ``units + nanos / 10^9 + (rest or 0) == amount``."""
    if amount.is_finite():
        exponent = amount.as_tuple().exponent
        assert isinstance(exponent, int)
        if exponent >= -9 and abs(amount) < _MAX_UNITS:
            units, nanos = divmod(int(amount.scaleb(9)), NANOS)
            return units, nanos, None
    return 0, 0, format(amount, "f")


def join(units: int, nanos: int, rest: str | None = None) -> Decimal:
    """The exact amount of summed columns, in its shortest plain form (``12.5``, ``100``)."""
    whole, fraction = divmod(nanos, NANOS)
    total = Decimal(units + whole)
    if fraction:
        total += Decimal(fraction).scaleb(-9)
    if rest is not None:
        total += Decimal(rest)
    return tidy(total)


def tidy(value: Decimal) -> Decimal:
    """Trailing fractional zeros dropped, never exponent notation (``1E+2`` -> ``100``)."""
    if value == _ZERO:
        return _ZERO
    normal = value.normalize()
    exponent = normal.as_tuple().exponent
    assert isinstance(exponent, int)
    return normal.quantize(Decimal(1)) if exponent > 0 else normal
