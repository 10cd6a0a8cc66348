"""Three ``adaptd run`` replicas of one group, each with its own state dir, on a real broker:
key states travel with their partitions through the changelog topic, with no shared volume.

One replica is killed (-9) mid-stream and its partitions are taken over; it then comes back on
an empty state dir and restores what it is assigned from the changelog alone. With keys learning
independently (no meta-learning, no resets) every position is predicted and its final prediction
equals that of one uninterrupted daemon. With meta-learning on, the replicas merge their
meta-states through the meta topic, and each one's ``meta.pt`` counts nearly all the group's
closed tasks.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest
import torch

from tests.helpers import scrape, wait_for
from tests.integration.kafka_harness import (
    FAST_GROUP,
    FREQUENT_CHECKPOINTS,
    INDEPENDENT_KEYS,
    Daemon,
    checkpointed,
    make_records,
    produce,
    read_topic,
)

pytestmark = pytest.mark.integration

PARTITIONS = 6


def final_predictions(bootstrap: str, topic: str, at_least: int) -> dict[tuple[int, int], float]:
    """(partition, position) → the last prediction written for it."""
    out: dict[tuple[int, int], float] = {}
    for r in read_topic(bootstrap, topic, at_least):
        body = json.loads(r.value)
        out[(body["partition"], body["position"])] = body["y_pred"]
    return out


def positions_of(bootstrap: str, topic: str, n: int) -> set[tuple[int, int]]:
    return {(r.partition, r.position) for r in read_topic(bootstrap, topic, n)}


def test_replicas_take_over_a_killed_one_and_a_new_one_restores_from_the_changelog(
        kafka_broker: str, kafka_topic: str, tmp_path: Path) -> None:
    topic_in, group = f"{kafka_topic}-in", f"g-{kafka_topic}"
    batches = [make_records(n, keys=24, seed=s) for n, s in ((1500, 7), (1500, 8), (750, 9))]
    flags = (*FREQUENT_CHECKPOINTS, *INDEPENDENT_KEYS)

    def replica(name: str) -> Daemon:
        return Daemon(tmp_path, name, f"kafka://{kafka_broker}/{topic_in}?group={group}&"
                      f"{FAST_GROUP}", "--sink", f"kafka://{kafka_broker}/{kafka_topic}-out",
                      *flags)

    produce(kafka_broker, topic_in, batches[0], partitions=PARTITIONS)
    straight = Daemon(tmp_path, "straight", f"kafka://{kafka_broker}/{topic_in}?group=straight-"
                      f"{kafka_topic}&{FAST_GROUP}",
                      "--sink", f"kafka://{kafka_broker}/{kafka_topic}-straight", *flags)
    replicas = [replica(name) for name in "abc"]
    everyone = [straight, *replicas]
    total = 0

    def all_predicted(n: int) -> None:
        expected = positions_of(kafka_broker, topic_in, n)
        wait_for(lambda: expected <= set(final_predictions(kafka_broker, f"{kafka_topic}-out", 0)),
                 120, f"predictions of all {n} positions")

    try:
        wait_for(lambda: all(d.ready() for d in replicas), 90, "three replicas to own partitions")
        victim = replicas[2]
        wait_for(lambda: sum(s.position for s in checkpointed(victim.state_dir).partitions.values())
                 > 0, 90, "the victim's first checkpoint")
        victim.kill()  # mid-stream: no checkpoint, no goodbye; its partitions move after 6 s
        produce(kafka_broker, topic_in, batches[1], partitions=PARTITIONS)
        total = len(batches[0]) + len(batches[1])
        all_predicted(total)

        newcomer = replica("newcomer")  # an empty state dir: the changelog is all it has
        everyone.append(newcomer)
        wait_for(newcomer.ready, 90, "the newcomer to own partitions")
        produce(kafka_broker, topic_in, batches[2], partitions=PARTITIONS)
        total += len(batches[2])
        all_predicted(total)
        for d in everyone:
            if d is not victim:
                assert d.stop() == 0, d.log()
    finally:
        for d in everyone:
            d.stop()

    # Its empty state dir had nothing: its first restores read the changelog from offset 0 (later
    # ones, after a rebalance, may find its own state dir current and apply nothing).
    whole = re.findall(r"restored from changelog \S+ offsets 0\.\.\d+: (\d+) checkpoints applied",
                       newcomer.log())
    assert whole and all(int(n) > 0 for n in whole), newcomer.log()
    mine = final_predictions(kafka_broker, f"{kafka_topic}-out", total)
    reference = final_predictions(kafka_broker, f"{kafka_topic}-straight", total)
    assert set(mine) == set(reference) == positions_of(kafka_broker, topic_in, total)
    wrong = {pos: (mine[pos], reference[pos]) for pos in reference if mine[pos] != reference[pos]}
    assert not wrong, f"{len(wrong)} positions differ, e.g. {list(wrong.items())[:3]}"


def meta_pt(d: Daemon) -> dict:
    return torch.load(d.state_dir / "meta.pt", weights_only=True)


def theta0_spread(replicas: list[Daemon]) -> float:
    """Largest distance between two replicas' meta.pt θ0, relative to the norm of their mean."""
    thetas = [meta_pt(d)["theta0"].double() for d in replicas]
    mean = torch.stack(thetas).mean(dim=0)
    worst = max(float(torch.linalg.norm(a - b)) for a in thetas for b in thetas)
    return worst / max(float(torch.linalg.norm(mean)), 1e-12)


def drifting_records(n: int, keys: int, seed: int) -> list[dict]:
    """Labelled linear records whose per-key weights flip sign every 120 records of the key:
    each key closes a task at every flip."""
    rng = random.Random(seed)
    weights = {f"k{k}": [rng.uniform(-2, 2) for _ in range(3)] for k in range(keys)}
    seen: Counter[str] = Counter()
    out = []
    for i in range(n):
        key = f"k{rng.randrange(keys)}"
        sign = 1 if (seen[key] // 120) % 2 == 0 else -1
        seen[key] += 1
        x = [round(rng.uniform(-1, 1), 6) for _ in range(3)]
        y = sign * sum(w * v for w, v in zip(weights[key], x, strict=True))
        out.append({"key": key, "id": f"r{i}", "x": x, "y": round(y, 6)})
    return out


def test_replicas_share_one_meta_state_through_the_meta_topic(
        kafka_broker: str, kafka_topic: str, tmp_path: Path) -> None:
    topic_in, group = f"{kafka_topic}-in", f"g-{kafka_topic}"
    records = drifting_records(9000, keys=18, seed=11)
    produce(kafka_broker, topic_in, records, partitions=PARTITIONS)
    replicas = [Daemon(tmp_path, name, f"kafka://{kafka_broker}/{topic_in}?group={group}&"
                       f"{FAST_GROUP}", "--sink", f"kafka://{kafka_broker}/{kafka_topic}-out",
                       *FREQUENT_CHECKPOINTS, "--set", "checkpoint.meta_merge_interval_s=1",
                       # One engine: under --model auto only the linear candidate's meta-state
                       # is published, while meta updates count both candidates'.
                       "--model", "linear")
                for name in "abc"]

    def group_tasks() -> float:
        return sum(scrape(f"{d.url}/metrics")[("adaptd_meta_updates_total", ())]
                   for d in replicas)

    def meta_pt_tasks(d: Daemon) -> int:
        path = d.state_dir / "meta.pt"
        return int(meta_pt(d)["tasks"]) if path.exists() else 0

    try:
        wait_for(lambda: all(d.ready() for d in replicas), 90, "three replicas to own partitions")
        expected = positions_of(kafka_broker, topic_in, len(records))
        wait_for(lambda: expected <= set(final_predictions(kafka_broker, f"{kafka_topic}-out", 0)),
                 180, "predictions of every position")
        assert group_tasks() >= 30, "too few closed tasks for the test to mean anything"
        wait_for(lambda: all(meta_pt_tasks(d) >= 0.9 * group_tasks() for d in replicas), 60,
                 "every replica's meta.pt to count 90% of the group's tasks")
        gauges = [scrape(f"{d.url}/metrics")[("adaptd_meta_tasks", ())] for d in replicas]
        assert all(g >= 0.9 * group_tasks() for g in gauges), gauges
        # The standardization statistics are the group's too: each meta.pt's count every
        # replica's records (each record once), not its own third.
        wait_for(lambda: all(meta_pt(d)["scaler"]["x"]["count"] >= 0.9 * len(records)
                             for d in replicas), 60, "meta.pt statistics over the group's records")
        assert all(meta_pt(d)["scaler"]["x"]["count"] <= len(records) for d in replicas)
        # θ0 agreement: at the end of the stream the replicas differ by what one merge interval
        # (1 s) of tasks moved; idle, merging every second, they converge on one meta-state.
        at_end = theta0_spread(replicas)
        wait_for(lambda: theta0_spread(replicas) < 1e-3, 60, "the replicas' θ0 to agree")
        print(f"θ0 spread (max pairwise |θa − θb| / |θ mean|, merges every 1 s): {at_end:.2e} "
              f"at the end of the stream, {theta0_spread(replicas):.2e} once idle")
        for d in replicas:
            assert d.stop() == 0, d.log()
    finally:
        for d in replicas:
            d.stop()
