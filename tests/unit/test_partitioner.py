"""The receiver's partitioner places every key where aiokafka's default does.

Consumers keep per-device order and the de-dup log relies on placement, so the
compiled murmur2, its pure-Python twin and aiokafka's own function must agree on
every key. The compiled module is built by ``make install``; these tests import it
directly, so a build that silently fell back to Python fails here.
"""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from postback_hub.service import _murmur2, partitioner
from postback_hub.service.partitioner import (
    KeyPartitioner,
    murmur2_python,
    partition_index_python,
)

# Kafka's own test vectors (clients' UtilsTest.testMurmur2, signed 32-bit results).
JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def realistic_keys(count: int) -> list[bytes]:
    """Keys as the receiver builds them (app:device), of every length around theirs."""
    rng = random.Random(16)
    keys = [f"demo:{n:032x}".encode() for n in range(count // 2)]
    keys += [
        f"app{rng.randrange(100)}:{rng.getrandbits(128):x}".encode()[: rng.randrange(0, 60)]
        for _ in range(count // 2)
    ]
    return keys


def test_the_compiled_build_is_the_one_in_use() -> None:
    assert partitioner.COMPILED
    assert partitioner.partition_index is _murmur2.partition_index


@pytest.mark.parametrize("implementation", [_murmur2.murmur2, murmur2_python])
def test_kafka_java_vectors(implementation: object) -> None:
    assert callable(implementation)
    for key, signed in JAVA_VECTORS.items():
        assert implementation(key) == signed & 0xFFFFFFFF


def test_both_agree_with_aiokafka_over_many_keys() -> None:
    for key in realistic_keys(20_000):
        expected = aiokafka_murmur2(key)
        assert _murmur2.murmur2(key) == expected, key
        assert murmur2_python(key) == expected, key


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=10_000))
def test_same_partition_as_aiokafka_for_any_key(key: bytes, count: int) -> None:
    expected = DefaultPartitioner()(key, list(range(count)), [])
    assert _murmur2.partition_index(key, count) == expected
    assert partition_index_python(key, count) == expected


def test_partitioner_places_keys_like_the_default_for_every_topic_size() -> None:
    ours, theirs = KeyPartitioner(), DefaultPartitioner()
    keys = realistic_keys(2_000)
    for count in (1, 2, 3, 12, 50, 64, 1000):
        # Partition ids need not start at 0 or be contiguous in the hook's contract.
        partitions = [p * 3 + 7 for p in range(count)]
        for key in keys:
            assert ours(key, partitions, partitions[:1]) == theirs(key, partitions, partitions[:1])


def test_a_keyless_record_goes_to_an_available_partition_if_any() -> None:
    ours = KeyPartitioner()
    assert {ours(None, [0, 1, 2, 3], [2]) for _ in range(50)} == {2}
    assert {ours(None, [0, 1], []) for _ in range(200)} == {0, 1}


@pytest.mark.parametrize("index", [_murmur2.partition_index, partition_index_python])
def test_no_partitions_is_an_error_not_a_crash(index: object) -> None:
    assert callable(index)
    with pytest.raises(ValueError, match="positive"):
        index(b"k", 0)


def test_the_compiled_function_takes_any_bytes_like_key() -> None:
    key = b"demo:0123"
    assert _murmur2.murmur2(bytearray(key)) == _murmur2.murmur2(memoryview(key))
    assert _murmur2.murmur2(bytearray(key)) == aiokafka_murmur2(key)
    with pytest.raises(TypeError):
        _murmur2.murmur2("not bytes")  # type: ignore[arg-type]
