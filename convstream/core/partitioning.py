"""Kafka's default partitioner in pure Python: which partition a message key lands on.

The stream routes every keyed message with Kafka's murmur2, so the offline engine must use the
same function to give each conversion the same match-model replica it would have in the stream.

>>> murmur2(b"21")  # Kafka's UtilsTest: -973932308 as a signed Java int
3321034988
>>> partition_for("conv:a1:e1", 4) in range(4)
True
"""

from __future__ import annotations

from functools import lru_cache

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2`` as an unsigned 32-bit int.

    >>> murmur2(b"foobar"), murmur2(b"abc")
    (3504634814, 479470107)
    """
    length = len(data)
    h = (_SEED ^ length) & _MASK
    full = length - length % 4
    for i in range(0, full, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    extra = length % 4
    if extra >= 3:
        h ^= data[full + 2] << 16
    if extra >= 2:
        h ^= data[full + 1] << 8
    if extra >= 1:
        h ^= data[full]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


@lru_cache(maxsize=1 << 17)
def partition_for(key: str | bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key`` (``murmur2 & 0x7fffffff``).

    >>> partition_for("21", 7) == (3321034988 & 0x7FFFFFFF) % 7
    True
    """
    data = key.encode("utf-8") if isinstance(key, str) else key
    return (murmur2(data) & 0x7FFFFFFF) % partitions
