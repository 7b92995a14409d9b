"""Seeds derived from a run's seed, so that every random stream (an epoch's order, an iteration's sampling) is a
function of (seed, position) alone and a resumed run draws exactly what an uninterrupted one drew."""

from __future__ import annotations


def derived_seed(seed: int, *position: int) -> int:
    """A seed for the stream at `position` (e.g. epoch; or round, offset) of a run seeded with `seed`:
    seed * 1_000_003 + the position read as digits in base 10_007. Distinct for distinct positions whose parts are
    below 10_007 (both are primes, so nearby seeds do not share streams)."""
    value = 0
    for part in position:
        value = value * 10_007 + part
    return seed * 1_000_003 + value
