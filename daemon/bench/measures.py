"""From one learner's predictions on one stream to the reported figures.

Definitions (all per record, all learners scored identically from their predictions):

- **Loss**: squared error for regression; log loss for classification with the probability
  clipped to ``[PROB_CLIP, 1 - PROB_CLIP]`` (tree ensembles emit hard 0/1 probabilities whose
  unclipped log loss is infinite), and accuracy at threshold 0.5 (the most probable class
  for K > 2 classes).
- **Segments**: a key's records between two changes of its true ``task``; a stream without
  tasks (the real stream) is one segment per key.
- **Hindsight comparator**: on each segment, the best fixed model of the stream's comparator
  class (ridge regression, or L2-logistic regression by Newton's method, on the stream's basis;
  one-against-all fits normalised for K > 2 classes), fitted on that segment's records and
  scored in-sample.
- **Regret**: cumulative loss minus the comparator's cumulative loss.
- **Noise floor**: the comparator's mean loss over the stream.
- **Samples to recover** after a change: the first ``k`` (counted in that key's records from the
  change) at which the mean excess loss (loss minus comparator loss) of samples ``k-4 … k``
  falls below twice the noise floor; a segment that ends first is censored at its length.
- **Detector**: a change is detected by the learner's first alarm on that key at or after the
  change and before the key's next change (delay = records of that key in between); a change
  without one is missed; every other alarm is false. Rates are per 10,000 records.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from adaptd.bench.streams import Basis, StreamData
from adaptd.records import TaskKind

PROB_CLIP = 1e-6
RECOVERY_WINDOW = 5
RECOVERY_FACTOR = 2.0
RIDGE = 1e-3
#: Edges of the samples-since-change buckets (the last bucket is open).
SINCE_CHANGE_EDGES = (0, 5, 20, 100, 500)


def record_losses(task: TaskKind, y: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per-record prequential loss: squared error, or clipped log loss.

    ``y_pred`` is (n,) P(y=1), or (n, K) class probabilities for labels ``0 … K-1``."""
    if task == "regression":
        return (y_pred - y) ** 2
    if y_pred.ndim == 2:
        p_true = y_pred[np.arange(len(y)), y.astype(np.int64)]
        return -np.log(np.clip(p_true, PROB_CLIP, 1.0))
    p = np.clip(y_pred, PROB_CLIP, 1.0 - PROB_CLIP)
    return -(y * np.log(p) + (1.0 - y) * np.log(1.0 - p))


@dataclass
class Structure:
    """The true segment structure of a stream, shared by every learner's scoring.

    ``segment`` (n,) numbers the segments globally; ``since_change`` (n,) counts a key's records
    since its segment began (0 on the first); ``change_positions`` are the record indices where
    a key's task changed (a key's first record is not a change); ``key_position`` (n,) is the
    record's index among its key's records.
    """

    segment: np.ndarray
    since_change: np.ndarray
    change_positions: np.ndarray
    key_position: np.ndarray
    n_keys: int


def structure(data: StreamData) -> Structure:
    """Segments, samples-since-change and change points from the keys and true tasks."""
    n = len(data)
    segment = np.empty(n, dtype=np.int64)
    since = np.empty(n, dtype=np.int64)
    key_pos = np.empty(n, dtype=np.int64)
    changes: list[int] = []
    last: dict[str, tuple[int, int, int, int]] = {}  # key → (task, segment, since, count)
    n_segments = 0
    for i, (key, task) in enumerate(zip(data.keys.tolist(), data.tasks.tolist(), strict=True)):
        prev = last.get(key)
        if prev is None or prev[0] != task:
            if prev is not None:
                changes.append(i)
            seg, s = n_segments, 0
            n_segments += 1
        else:
            seg, s = prev[1], prev[2] + 1
        count = 0 if prev is None else prev[3] + 1
        last[key] = (task, seg, s, count)
        segment[i], since[i], key_pos[i] = seg, s, count
    return Structure(segment, since, np.array(changes, dtype=np.int64), key_pos, len(last))


def hindsight_losses(
    task: TaskKind, basis: Basis, data: StreamData, segment: np.ndarray
) -> np.ndarray:
    """Per-record loss of the best fixed model fitted on each record's own segment."""
    phi = basis(data.X)
    # Standardized columns: the raw scales of real streams (1e5 and more) would leave Newton's
    # method with an ill-conditioned Hessian; the fit is the same model class either way.
    spread = phi.std(axis=0)
    phi = (phi - phi.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    phi = np.column_stack([phi, np.ones(len(phi))])
    k = data.n_classes if task == "classification" else 0
    y_fit = np.empty((len(data), k) if k > 2 else len(data))
    order = np.argsort(segment, kind="stable")
    bounds = np.flatnonzero(np.diff(segment[order])) + 1
    for idx in np.split(order, bounds):
        A, b = phi[idx], data.y[idx]
        if task == "regression":
            w = np.linalg.solve(A.T @ A + RIDGE * np.eye(A.shape[1]), A.T @ b)
            y_fit[idx] = A @ w
        elif k > 2:
            ovr = np.column_stack([_logistic_fit(A, (b == c).astype(np.float64))
                                   for c in range(k)])
            y_fit[idx] = ovr / ovr.sum(axis=1, keepdims=True)
        else:
            y_fit[idx] = _logistic_fit(A, b)
    return record_losses(task, data.y, y_fit)


def _logistic_fit(A: np.ndarray, b: np.ndarray, iterations: int = 30) -> np.ndarray:
    """In-sample P(y=1) of an L2-regularised logistic regression fitted by Newton's method."""
    w = np.zeros(A.shape[1])
    reg = RIDGE * np.eye(A.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(A @ w, -30, 30)))
        grad = A.T @ (p - b) + RIDGE * w
        hess = (A * (p * (1 - p))[:, None]).T @ A + reg
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return 1.0 / (1.0 + np.exp(-np.clip(A @ w, -30, 30)))


@dataclass
class Scores:
    """Every figure of one learner on one stream (``None`` where it does not apply)."""

    mean_loss: float
    accuracy: float | None
    regret: float
    records_per_s: float
    recover_median: float | None
    recovered_share: float | None
    detector_delay: float | None
    missed_per_10k: float | None
    missed_share: float | None
    false_alarms_per_10k: float | None
    loss_by_since_change: list[float | None] = field(default_factory=list)
    regret_curve: list[float] = field(default_factory=list, repr=False)


def score(
    task: TaskKind,
    data: StreamData,
    struct: Structure,
    comparator_loss: np.ndarray,
    y_pred: np.ndarray,
    alarms: np.ndarray | None,
    seconds: float,
    curve_points: int = 400,
) -> Scores:
    """All figures of one learner's run; ``comparator_loss`` comes from :func:`hindsight_losses`."""
    n = len(data)
    loss = record_losses(task, data.y, y_pred)
    excess = loss - comparator_loss
    cumulative = np.cumsum(excess)
    step = max(1, n // curve_points)
    accuracy = None
    if task == "classification" and y_pred.ndim == 2:
        accuracy = float(np.mean(np.argmax(y_pred, axis=1) == data.y))
    elif task == "classification":
        accuracy = float(np.mean((y_pred >= 0.5) == (data.y >= 0.5)))
    recover = recovery(excess, struct, float(comparator_loss.mean()))
    detector = detection(alarms, struct, n) if alarms is not None else (None, None, None, None)
    return Scores(
        mean_loss=float(loss.mean()),
        accuracy=accuracy,
        regret=float(cumulative[-1]),
        records_per_s=n / seconds if seconds > 0 else math.inf,
        recover_median=recover[0],
        recovered_share=recover[1],
        detector_delay=detector[0],
        missed_per_10k=detector[1],
        missed_share=detector[2],
        false_alarms_per_10k=detector[3],
        loss_by_since_change=loss_by_bucket(loss, struct.since_change),
        regret_curve=cumulative[step - 1 :: step].tolist(),
    )


def loss_by_bucket(loss: np.ndarray, since_change: np.ndarray) -> list[float | None]:
    """Mean loss in each :data:`SINCE_CHANGE_EDGES` bucket (``None`` for an empty bucket)."""
    edges = [*SINCE_CHANGE_EDGES, np.iinfo(np.int64).max]
    out: list[float | None] = []
    for lo, hi in itertools.pairwise(edges):
        mask = (since_change >= lo) & (since_change < hi)
        out.append(float(loss[mask].mean()) if mask.any() else None)
    return out


def recovery(
    excess: np.ndarray, struct: Structure, noise_floor: float
) -> tuple[float | None, float | None]:
    """Median samples to recover over the stream's changes, and the share that recovered."""
    if len(struct.change_positions) == 0:
        return None, None
    threshold = RECOVERY_FACTOR * noise_floor
    samples: list[int] = []
    recovered = 0
    for pos in struct.change_positions.tolist():
        seg = struct.segment[pos]
        idx = np.flatnonzero(struct.segment == seg)
        seg_excess = excess[idx]
        if len(seg_excess) >= RECOVERY_WINDOW:
            running = np.convolve(seg_excess, np.ones(RECOVERY_WINDOW) / RECOVERY_WINDOW, "valid")
            below = np.flatnonzero(running < threshold)
        else:
            below = np.array([], dtype=np.int64)
        if len(below):
            # running[j] averages samples j … j+4, so it is known at sample k = j + 4.
            samples.append(int(below[0]) + RECOVERY_WINDOW - 1)
            recovered += 1
        else:
            samples.append(len(seg_excess))
    return float(np.median(samples)), recovered / len(samples)


def detection(
    alarms: np.ndarray, struct: Structure, n: int
) -> tuple[float | None, float, float | None, float]:
    """Mean delay, missed per 10k records, missed share, false alarms per 10k records."""
    alarm_positions = np.flatnonzero(alarms)
    changes = struct.change_positions
    matched: set[int] = set()
    delays: list[int] = []
    missed = 0
    for pos in changes.tolist():
        seg = struct.segment[pos]
        # Alarms on this key inside this segment: the segment holds only this key's records.
        in_seg = alarm_positions[struct.segment[alarm_positions] == seg]
        if len(in_seg):
            first = int(in_seg[0])
            matched.add(first)
            delays.append(int(struct.key_position[first] - struct.key_position[pos]))
        else:
            missed += 1
    false_alarms = len(alarm_positions) - len(matched)
    per_10k = 10_000 / n
    return (
        float(np.mean(delays)) if delays else None,
        missed * per_10k,
        missed / len(changes) if len(changes) else None,
        false_alarms * per_10k,
    )
