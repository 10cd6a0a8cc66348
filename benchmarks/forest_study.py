"""Would a forest expert, or a combiner that sees accuracy, close ``auto``'s gap on river Phishing?

Issue #11: with ``--task classification`` only, river's Phishing stream scores 0.8952 against
river's ARF (10 trees, seed 0) 0.9120. This script answers offline, on every classification
stream of the bench and the held-out set:

1. It runs ``auto`` through the bench's learner (``benchmarks/auto_default.py``'s
   ``run_adaptd``), recording per batch each expert's predictions (what Hedge mixes) and the
   tree expert's inputs (keys, features, labels, learn and drift-alarm flags).
2. On the tree's inputs it runs the compiled forest of ``benchmarks/forest_expert.py`` (for
   each ``--salts`` seed), as the tree would have been run inside ``auto``.
3. It replays Hedge (η = 1 on log loss, fixed share 10⁻³, the ``prior`` and ``last`` experts
   as :mod:`adaptd.learner.hedge` computes them) over: the recorded experts (must reproduce
   ``auto``'s accuracy: a check of the replay), the forest added as a seventh expert, and the
   forest in place of the tree; and, binary streams, an online logistic stacking of the
   experts' logits (AdaGrad, step ``--stack-lr``; Wolpert 1992, "Stacked generalization").

    .venv/bin/python benchmarks/forest_study.py [--only bench|heldout] [--streams a,b]
        [--salts 1,2,3] [--subspace all|sqrt]

Accuracy per stream; the forest's columns are per salt. Deterministic.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import auto_default
import forest_expert

from adaptd.learner import ensemble, trees
from adaptd.learner.jit import njit

Batch = tuple[Any, ...]


def record(only: str | None, wanted: list[str]) -> dict[str, dict[str, Any]]:
    """Run ``auto`` on each classification stream; per batch ``(kind, slots, experts, ys,
    skip, tree_inputs)``, ``kind`` "b" (binary: experts ``(n, 4)``, P(y = 1) of linear, MLP,
    kNN, tree) or "c" (multi-class: ``(n, 6, K)``, prior and last included)."""
    batches: list[Batch] = []
    tree_in: list[tuple[Any, ...]] = []
    run_tree, mix_b, mix_c = trees.Trees.run, ensemble.hedge_batch, ensemble.hedge_classes

    def tree_run(self: trees.Trees, slots: np.ndarray, X: np.ndarray, ys: np.ndarray,
                 learn: np.ndarray, reset: np.ndarray, n_classes: int,
                 columns: bool = False) -> np.ndarray:
        tree_in.append((slots.copy(), np.array(X), ys.copy(), learn.copy(), reset.copy(),
                        n_classes, columns))
        return run_tree(self, slots, X, ys, learn, reset, n_classes, columns)

    def keep(kind: str, mix: Any) -> Any:
        def wrapped(slots: np.ndarray, C: np.ndarray, ys: np.ndarray, skip: np.ndarray,
                    *rest: Any) -> Any:
            batches.append((kind, slots.copy(), C.copy(), ys.copy(), skip.copy(),
                            tree_in.pop()))
            return mix(slots, C, ys, skip, *rest)
        return wrapped

    trees.Trees.run = tree_run  # type: ignore[method-assign]
    ensemble.hedge_batch, ensemble.hedge_classes = keep("b", mix_b), keep("c", mix_c)
    out: dict[str, dict[str, Any]] = {}
    try:
        for name, task, load, _ in auto_default.streams(only):
            if task != "classification" or (wanted and not any(
                    w.lower() in name.lower() for w in wanted)):
                continue
            batches.clear()
            acc = auto_default.run_adaptd("auto", task, load())[0]
            out[name] = {"auto": acc, "batches": list(batches)}
    finally:
        trees.Trees.run = run_tree  # type: ignore[method-assign]
        ensemble.hedge_batch, ensemble.hedge_classes = mix_b, mix_c
    return out


def forest_outputs(batches: list[Batch]) -> list[np.ndarray]:
    """The forest's predictions, batch by batch, on the tree's recorded inputs."""
    forest: forest_expert.Forest | None = None
    outs = []
    for *_, (slots, X, ys, learn, reset, K, columns) in batches:
        if forest is None:
            forest = forest_expert.Forest(X.shape[1])
            forest.grow(int(slots.max()) + 16)
        outs.append(forest.run(slots, X, ys, learn, reset, K, columns))
    return outs


def stacked(batches: list[Batch], forest: list[np.ndarray] | None, mode: str
            ) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(P (n, E, K), labels (NaN: not charged), binary)``; ``mode`` "base", "add" (forest
    after the tree) or "instead" (forest in the tree's place). Binary's prior and last
    columns are left for :func:`hedge` to fill."""
    K = max(C.shape[2] if kind == "c" else 2 for kind, _, C, *_ in batches)
    Ps, labels = [], []
    binary = batches[0][0] == "b"
    for b, (kind, _, C, ys, skip, _) in enumerate(batches):
        cols = [C[:, j] for j in range(4)]
        if forest is not None:
            f = forest[b][:, 0] if kind == "b" else forest[b]
            if mode == "add":
                cols.append(f)
            else:
                cols[3] = f
        P = np.zeros((len(ys), len(cols) + 2, K))
        for j, p in enumerate(cols):
            if kind == "b":
                P[:, j, 1], P[:, j, 0] = p, 1.0 - p
            else:
                P[:, j, :p.shape[1]] = p
        if kind == "c":
            P[:, -2, :C.shape[2]] = C[:, 4]
        y = ys.astype(np.float64).copy()
        y[skip] = np.nan
        Ps.append(P)
        labels.append(y)
    return np.concatenate(Ps), np.concatenate(labels), binary


@njit()
def hedge(P: np.ndarray, y: np.ndarray, binary: bool, eta: float, share: float,
          out: np.ndarray) -> None:
    """One key's Hedge as :func:`adaptd.learner.hedge.hedge_batch` / ``hedge_classes`` (the
    bench's streams have one key); fills the ``prior`` (binary) and ``last`` rows of ``P``."""
    n, E, K = P.shape
    W = np.full(E, 1.0 / E)
    count, mean, last, pairs, repeats = 0.0, 0.0, -1.0, 0.0, 0.0
    for i in range(n):
        if binary:  # Laplace's rule of succession
            P[i, E - 2, 1] = (mean * count + 1.0) / (count + 2.0)
            P[i, E - 2, 0] = 1.0 - P[i, E - 2, 1]
        stay = (repeats + 1.0) / (pairs + 2.0)
        for c in range(K):
            P[i, E - 1, c] = 1.0 / K if last < 0 else (1.0 - stay) / (K - 1)
        if last >= 0:
            P[i, E - 1, int(last)] = stay
        for c in range(K):
            out[i, c] = 0.0
            for j in range(E):
                out[i, c] += W[j] * P[i, j, c]
        if np.isnan(y[i]):
            continue
        t = int(y[i])
        total = 0.0
        for j in range(E):
            W[j] *= np.exp(eta * np.log(min(max(P[i, j, t], 1e-6), 1.0)))
            total += W[j]
        for j in range(E):
            W[j] = (1.0 - share) * W[j] / total + share / E
        if last >= 0:
            pairs += 1.0
            repeats += 1.0 if last == y[i] else 0.0
        count += 1.0
        last = y[i]
        mean += (y[i] - mean) / count


@njit()
def stack(P: np.ndarray, y: np.ndarray, lr: float, out: np.ndarray) -> None:
    """Binary: P(y = 1) = σ(b + Σ w_j logit p_j), learned online by AdaGrad on log loss,
    starting from the experts' logits averaged."""
    n, E, _ = P.shape
    w = np.full(E + 1, 1.0 / E)
    w[0] = 0.0
    g2 = np.full(E + 1, 1e-8)
    z = np.empty(E + 1)
    for i in range(n):
        z[0] = 1.0
        for j in range(E):
            p = min(max(P[i, j, 1], 1e-4), 1.0 - 1e-4)
            z[j + 1] = np.log(p / (1.0 - p))
        a = 0.0
        for j in range(E + 1):
            a += w[j] * z[j]
        out[i] = 1.0 / (1.0 + np.exp(-a))
        if np.isnan(y[i]):
            continue
        for j in range(E + 1):
            g = (out[i] - y[i]) * z[j]
            g2[j] += g * g
            w[j] -= lr * g / np.sqrt(g2[j])


def accuracy(P: np.ndarray, y: np.ndarray) -> float:
    ok = ~np.isnan(y)
    return float(np.mean(np.argmax(P[ok], axis=1) == y[ok]))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["bench", "heldout"])
    ap.add_argument("--streams", default="")
    ap.add_argument("--salts", default="1,2,3")
    ap.add_argument("--subspace", default="all", choices=["all", "sqrt"])
    ap.add_argument("--stack-lr", type=float, default=0.2)
    args = ap.parse_args()
    forest_expert.SUBSPACE = args.subspace
    salts = [int(s) for s in args.salts.split(",")]
    print(f"{'stream':22s} {'auto':>7s} {'replay':>7s}  forest alone / +forest / forest "
          f"instead of tree, per salt {salts}   stack (+forest, salt {salts[0]})")
    for name, rec in record(args.only, [w for w in args.streams.split(",") if w]).items():
        batches = rec["batches"]
        P, y, binary = stacked(batches, None, "base")
        mix = np.empty((len(y), P.shape[2]))
        hedge(P, y, binary, 1.0, 1e-3, mix)
        replay = accuracy(mix, y)
        cells, stack_cell = [], ""
        for salt in salts:
            forest_expert.SALT = salt
            forest = forest_outputs(batches)
            alone = np.concatenate([f[:, 0] for f in forest]) if binary else None
            row = [accuracy(np.column_stack([1 - alone, alone]), y) if alone is not None
                   else accuracy(stacked(batches, forest, "add")[0][:, 4], y)]
            for mode in ("add", "instead"):
                Pm, _, _ = stacked(batches, forest, mode)
                hedge(Pm, y, binary, 1.0, 1e-3, mix)
                row.append(accuracy(mix, y))
                if binary and mode == "add" and not stack_cell:
                    p1 = np.empty(len(y))
                    stack(Pm, y, args.stack_lr, p1)
                    stack_cell = f"{accuracy(np.column_stack([1 - p1, p1]), y):.4f}"
            cells.append("/".join(f"{v:.4f}" for v in row))
        print(f"{name[:22]:22s} {rec['auto']:7.4f} {replay:7.4f}  " + "  ".join(cells)
              + f"   {stack_cell}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
