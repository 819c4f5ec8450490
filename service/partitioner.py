"""Which partition a keyed record goes to: exactly where aiokafka's default puts it.

Consumers keep per-device order and the de-dup log relies on a device staying on
one partition, so the choice must never differ from aiokafka's
``DefaultPartitioner`` (Kafka's murmur2, like the Java client). aiokafka's murmur2
is pure Python and cost about 10 us per callback; ``_murmur2`` is the same function
in C, built by ``pip install`` (``make install``) from ``service/_murmur2.c``. Where
it is not built, the pure-Python twin below gives the same answers, only slower.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2_python(data: bytes) -> int:
    """Kafka's murmur2 of ``data`` as an unsigned 32-bit number (the fallback)."""
    length = len(data)
    h = _SEED ^ length
    end = length & ~3
    for i in range(0, end, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    if tail:
        if tail == 3:
            h ^= data[end + 2] << 16
        if tail >= 2:
            h ^= data[end + 1] << 8
        h = ((h ^ data[end]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def partition_index_python(key: bytes, count: int) -> int:
    if count <= 0:
        raise ValueError("count must be positive")
    return (murmur2_python(key) & 0x7FFFFFFF) % count


partition_index: Callable[[bytes, int], int]
try:
    from postback_hub.service._murmur2 import partition_index as _compiled

    partition_index = _compiled
    COMPILED = True
except ImportError:  # not built (a source checkout without `make install`)
    partition_index = partition_index_python
    COMPILED = False


class KeyPartitioner:
    """aiokafka's ``partitioner`` hook: its default's choices, with a compiled murmur2."""

    def __call__(
        self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
    ) -> int:
        if key is None:
            # As aiokafka's default; the receiver always sends a key.
            return random.choice(available or all_partitions)  # noqa: S311 - spreading, not secrecy
        return all_partitions[partition_index(key, len(all_partitions))]
