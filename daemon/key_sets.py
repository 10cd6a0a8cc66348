"""Which partition each key belongs to, asked of many keys at once.

:class:`adaptd.partitions.Partitions` keeps a dict of key → partition and, per partition, sets
of keys that changed or left memory. With one key per record (a million distinct keys) every
batch brings thousands of new keys and every checkpoint lets up to ``max_keys`` go, so these
questions are asked of whole batches: as set operations and C-level maps over the dicts, not
a Python step per key. A batch's keys are most often all known (few keys) or all new
(distinct keys), and a run of a file has one partition: those cases cost one pass in C.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, MutableMapping, Sequence
from typing import Any


def unknown(keys: Sequence[str], known: Mapping[str, Any]) -> list[str]:
    """The distinct ``keys`` not in ``known``, in order of first appearance.

    >>> unknown(["a", "b", "a", "c"], {"b": 0})
    ['a', 'c']
    """
    distinct = dict.fromkeys(keys)
    if known.keys().isdisjoint(distinct):
        return list(distinct)
    return [k for k in distinct if k not in known]


def on_partition(key_partition: Mapping[str, int], keys: Iterable[str], p: int) -> set[str]:
    """Those of ``keys`` whose records come from partition ``p``.

    >>> sorted(on_partition({"a": 0, "b": 1, "c": 0}, ["a", "b", "d"], 0))
    ['a']
    """
    present = key_partition.keys() & keys
    # Every key of one partition (a file's run): a pass over the map's values, in order,
    # instead of a lookup of each key (a cache miss each with 100k keys).
    if not present or set(key_partition.values()) <= {p}:
        return present
    return {k for k in present if key_partition[k] == p}


def take(key_partition: MutableMapping[str, int], keys: Collection[str]) -> dict[int, set[str]]:
    """Remove ``keys`` from ``key_partition``; returns partition → the keys removed from it.

    >>> owners = {"a": 0, "b": 1, "c": 0}
    >>> take(owners, ["a", "b", "x"]) == {0: {"a"}, 1: {"b"}}, owners
    (True, {'c': 0})
    """
    gone = list(key_partition.keys() & keys)
    parts = list(map(key_partition.pop, gone))
    if len(set(parts)) == 1:  # one partition (a file's run)
        return {parts[0]: set(gone)}
    out: dict[int, set[str]] = {}
    for key, p in zip(gone, parts, strict=True):
        out.setdefault(p, set()).add(key)
    return out
