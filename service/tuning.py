"""Process-wide settings for a long-running service process."""

from __future__ import annotations

import gc

# The young generation is collected after this many net allocations (CPython's
# default is 700). At thousands of messages a second the default meant hundreds
# of collections a second, about 7% of a consumer's CPU; cyclic garbage now waits
# a little longer (a few MB at most) before it is freed. The older generations
# keep CPython's ratios (10), so a full collection comes no later than it would.
YOUNG_GENERATION_THRESHOLD = 50_000


def tune_gc() -> None:
    """Call once start-up is done: start-up objects leave the collector's view for good
    (``gc.freeze``) and collections become rarer."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, 10, 10)
