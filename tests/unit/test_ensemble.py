"""``--model auto``: Hedge over candidate learners per key (adaptd.learner.ensemble)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from adaptd.config import load_settings
from adaptd.learner import build_learner
from adaptd.learner.ensemble import HedgeLearner, task_experts
from adaptd.partitions import combine, partition_part, shared_part
from adaptd.records import Record
from adaptd.settings import RegretConfig
from tests.unit.test_neighbours import rings


def _persistent(seed: int, n: int, keys: int = 2) -> list[Record]:
    """A random walk per key with uninformative features: the last label is the best
    forecast, and no model of x can beat it."""
    rng = np.random.default_rng(seed)
    level = {f"k{i}": 0.0 for i in range(keys)}
    out = []
    for i in range(n):
        key = f"k{i % keys}"
        level[key] += float(rng.normal())
        out.append(Record(x=tuple(rng.normal(size=3).tolist()), y=level[key] * 10.0, key=key))
    return out


def _weights(learner: HedgeLearner) -> dict[str, float]:
    weights = learner.summary().candidate_weights
    assert weights is not None
    return weights


def test_weights_move_to_the_better_expert() -> None:
    learner = HedgeLearner("regression", regret=RegretConfig(baseline=False, hindsight=False))
    records = _persistent(0, 3000)
    for lo in range(0, len(records), 256):
        learner.process_many(records[lo : lo + 256])
    weights = _weights(learner)
    assert set(weights) == set(task_experts("regression"))
    assert weights["last"] > 0.9, weights
    # The mixture is about as good as its best expert (Hedge's regret bound), far better
    # than the linear candidate alone.
    linear = learner.candidates["linear"].summary().cumulative_loss
    assert learner.summary().cumulative_loss < 0.5 * linear


def _shocks(seed: int, n: int = 3000, every: int = 250) -> list[Record]:
    """WaterFlow-like: a level that holds for long calm stretches (where every expert is
    about as good as the last label) and jumps by 30-60 deviations of its noise every
    ``every`` records (where only the last label follows at once)."""
    rng = np.random.default_rng(seed)
    level, out = 100.0, []
    for i in range(n):
        if i % every == every - 1:
            level += float(rng.choice([-1.0, 1.0]) * rng.uniform(30.0, 60.0))
        level += 0.2 * float(rng.normal())
        out.append(Record(x=tuple(rng.normal(size=3).tolist()), y=level, key="k"))
    return out


def test_regret_to_the_last_label_stays_tiny_on_a_level_with_rare_shocks() -> None:
    """The share mixes back to the key's past posteriors, not evenly: after a calm stretch
    the weight is still on the expert that was right at the shocks before (fixed share
    spread it over the others: 0.7 % to 3.3 % more loss than the last label here)."""
    for seed in range(3):
        records = _shocks(seed)
        learner = HedgeLearner("regression", regret=RegretConfig(baseline=False,
                                                                 hindsight=False))
        outs = [learner.process_many(records[lo : lo + 256])
                for lo in range(0, len(records), 256)]
        ys = np.array([r.y for r in records])
        # The second record: one label seen, so every expert forecasts it (no untrained
        # model's guess pulls the mixture away).
        assert abs(outs[0].y_pred[1] - ys[0]) < 1e-9 * abs(ys[0])
        last_label = float(np.sum((np.r_[0.0, ys[:-1]] - ys) ** 2))
        assert learner.summary().cumulative_loss <= 1.003 * last_label, seed


def test_classification_mixes_probabilities() -> None:
    rng = np.random.default_rng(1)
    records = []
    for _ in range(2000):
        x = rng.normal(size=2)
        records.append(Record(x=tuple(x.tolist()), y=float(x[0] * x[1] > 0)))  # XOR-like
    learner = HedgeLearner("classification")
    outs = [learner.process_many(records[lo : lo + 256]) for lo in range(0, 2000, 256)]
    p = np.concatenate([o.y_pred for o in outs])
    assert ((p >= 0) & (p <= 1)).all()
    w = _weights(learner)
    # The experts that can represent the sign of x0·x1 (the MLP; AODE: the sign is the
    # quadrants' cells) hold the weight, the linear one none.
    assert w["mlp"] + w["aode"] > 0.9 and w["linear"] < 0.01


def test_state_round_trips_through_the_partition_split() -> None:
    records = _persistent(2, 600, keys=3)
    a = HedgeLearner("regression")
    a.process_many(records[:500])
    shared = shared_part(a)
    parts = [partition_part(a, ["k0", "k1"]), partition_part(a, ["k2"])]
    b = HedgeLearner("regression")
    b.load_state_dict(combine(shared, parts))
    assert sorted(b.keys()) == ["k0", "k1", "k2"]
    np.testing.assert_array_equal(a.process_many(records[500:]).y_pred,
                                  b.process_many(records[500:]).y_pred)
    assert _weights(a) == _weights(b)


def test_regression_predictions_do_not_depend_on_where_batches_start() -> None:
    """A key seen for the first time is predicted by its neighbours' expert from the mean of
    every label learnt before it, counted record by record: batches of 1, 2, 3 or 5 give the
    bits of one batch of all. (The batch's starting mean once made them differ, so a restart
    or a Kafka fetch of other sizes changed the model.)"""
    records = [r for r in _persistent(4, 240, keys=6) if r.key != "k5"]
    late = _persistent(5, 40, keys=6)
    records[100:100] = [r for r in late if r.key == "k5"]  # a new key well into the stream
    whole = HedgeLearner("regression")
    expected = whole.process_many(records).y_pred
    for size in (1, 2, 3, 5):
        split = HedgeLearner("regression")
        got = np.concatenate([split.process_many(records[i:i + size]).y_pred
                              for i in range(0, len(records), size)])
        np.testing.assert_array_equal(got, expected, err_msg=f"batches of {size}")
        assert _weights(split) == _weights(whole)


def test_forget_and_build_learner() -> None:
    learner = build_learner(load_settings(environ={}, flags={"task": "classification"}))
    assert isinstance(learner, HedgeLearner)
    learner.process_many([Record(x=(1.0, 2.0), y=1.0, key="a"), Record(x=(0.0, 1.0), key="b")])
    learner.forget(["a"])
    assert list(learner.keys()) == ["b"]
    single = build_learner(load_settings(environ={}, flags={"model": "linear"}))
    assert not isinstance(single, HedgeLearner)


def run_default_classification(tmp_path: Path, lines: list[str], sink: str) -> list[dict]:
    """``adaptd run --task classification`` (the default model) after appending ``lines`` to
    ``tmp_path/in.jsonl``, with its state in ``tmp_path/state``; the predictions it wrote."""
    source = tmp_path / "in.jsonl"
    with source.open("a") as fh:
        fh.write("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTD_")}
    result = subprocess.run(
        [sys.executable, "-m", "adaptd", "run", "--source", f"jsonl:{source}", "--task",
         "classification", "--sink", f"jsonl:{tmp_path / sink}", "--state-dir",
         str(tmp_path / "state"), "--metrics-port", "off"],
        check=False, cwd=tmp_path, capture_output=True, timeout=180, env=env)
    assert result.returncode == 0, result.stderr.decode()
    return [json.loads(line) for line in (tmp_path / sink).read_text().splitlines()]


def test_adaptd_run_classification_on_a_jsonl_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    lines = []
    for i in range(400):
        x = rng.normal(size=2)
        lines.append(json.dumps({"id": i, "key": f"k{i % 2}", "x": x.tolist(),
                                 "y": int(x[0] > 0)}))
    out = run_default_classification(tmp_path, lines, "out.jsonl")
    assert len(out) == 400
    assert all(0.0 <= p["proba"] <= 1.0 for p in out)
    late = out[200:]
    accuracy = np.mean([(p["proba"] > 0.5) == (int(lines_y) == 1) for p, lines_y in
                        zip(late, [json.loads(line)["y"] for line in lines[200:]], strict=True)])
    assert accuracy > 0.85


def test_auto_mixes_the_class_probabilities_of_a_multi_class_stream() -> None:
    """Once a label other than 0/1 arrives, Hedge mixes the experts' class probabilities;
    the mixture's losses count in the totals."""
    settings = load_settings(environ={}, flags={"task": "classification"})
    learner = build_learner(settings)
    assert isinstance(learner, HedgeLearner)
    rng = np.random.default_rng(4)
    labels = ["red", "green", "blue"]
    records = []
    for _ in range(300):
        c = int(rng.integers(3))
        records.append(Record(key="k", x=(c + 0.2 * rng.normal(), rng.normal()),
                              y=labels[c]))
    out = learner.process_many(records)
    assert learner.multiclass and out.probas is not None
    assert out.probas.shape == (300, 3)
    assert np.allclose(out.probas.sum(axis=1), 1.0)
    truth = out.classes.targets(np.array([r.y for r in records[200:]], dtype=object))
    assert np.mean(out.y_pred[200:].astype(int) == truth.astype(int)) > 0.8
    assert learner.summary().cumulative_loss > 0


def test_the_linear_candidates_meta_state_is_the_one_published_and_merged() -> None:
    """STATE_DIR/meta.pt and the group's meta topic carry one meta-state: the linear
    candidate's; a merged one handed back through load_state_dict lands there."""
    settings = load_settings(environ={}, flags={"task": "regression"})
    learner = build_learner(settings)
    rng = np.random.default_rng(5)
    learner.process_many([Record(key="k", x=(float(v),), y=2.0 * float(v))
                          for v in rng.normal(size=50)])
    state = learner.state_dict(keys=())
    linear = learner.candidates["linear"]
    own = linear.state_dict(keys=())["meta"]
    assert state["meta"]["tasks"] == own["tasks"]
    assert np.array_equal(state["meta"]["theta0"], own["theta0"])
    merged = {**state["meta"], "tasks": 41, "theta0": np.full_like(state["meta"]["theta0"], 0.5)}
    learner.load_state_dict({**state, "meta": merged})
    assert linear.meta is not None and linear.meta.tasks == 41
    assert np.all(linear.meta.theta0 == 0.5)


def test_state_before_the_first_record() -> None:
    """A Kafka source may be assigned, and checkpointed, before any record arrives."""
    for model in ("auto", "linear", "mlp"):
        learner = build_learner(load_settings(environ={}, flags={"model": model}))
        state = learner.state_dict(keys=())
        learner.load_state_dict(state)
        assert state["keys"] == {}


def test_adaptd_run_default_on_string_labels(tmp_path: Path) -> None:
    """The default (only --task) end to end on a jsonl file with string class labels, through
    a restart from the checkpoint: the neighbours' windows come back with the keys."""
    records = rings(800, 5)
    lines = [json.dumps({"id": i, "key": r.key, "x": list(r.x), "y": r.y})
             for i, r in enumerate(records)]
    out = run_default_classification(tmp_path, lines[:600], "first.jsonl")
    assert len(out) == 600
    assert {p["y_pred"] for p in out} <= {"inner", "middle", "outer"}
    assert all(abs(sum(p["probas"].values()) - 1.0) < 1e-6 for p in out)
    hits = [p["y_pred"] == r.y for p, r in zip(out[300:], records[300:600], strict=True)]
    assert np.mean(hits) > 0.85
    # Resumed from the checkpoint: right from its first records, as good as before the stop
    # (a learner starting empty is near chance on its first 50).
    out = run_default_classification(tmp_path, lines[600:], "second.jsonl")
    assert [int(p["id"]) for p in out] == list(range(600, 800))
    hits = [p["y_pred"] == r.y for p, r in zip(out[:50], records[600:650], strict=True)]
    assert np.mean(hits) > 0.85


def test_keys_evicted_over_the_cap_wait_for_a_checkpoint_and_say_so() -> None:
    # The runner does not defer a checkpoint while evicted keys wait in memory for it
    # (checkpoint.max_time_share): the mixture must report them as its candidates do.
    from adaptd.settings import LearnerConfig

    learner = HedgeLearner("regression", config=LearnerConfig(max_keys=2))
    learner.process_many(_persistent(3, 60, keys=3))
    assert len(learner.keys()) == 2
    assert learner.evictions_waiting == learner.main.evictions_waiting == 1
    assert sorted(learner.take_evicted()) == ["k0"]
    assert learner.evictions_waiting == 0
