"""Every benchmarked learner behind one interface: run a stream test-then-train, time it.

adaptd's variants are built from settings alone, exactly as ``adaptd run`` would build them
(:func:`adaptd.learner.build_learner`), and driven through ``process_many`` in batches of the
runner's default size. The peers and baselines live in :mod:`adaptd.bench.peers`, the grid of
adaptd settings tried on the real streams in :mod:`adaptd.bench.variants`.

Every learner gets its input already in its own native form (daemon records, river dicts, VW
text lines) before the clock starts, so the timed loop is predict + learn only.
"""

from __future__ import annotations

from adaptd.bench.engine import (
    ADAPTD,
    BATCH_SIZE,
    AdaptdLearner,
    adaptd_flags,
    standardized,
)
from adaptd.bench.peers import PEERS
from adaptd.bench.protocol import BenchLearner, LearnerSpec, Trace, Unsupported, feature_dicts
from adaptd.bench.variants import VARIANTS

__all__ = ["BATCH_SIZE", "LEARNERS", "REFERENCE_LEARNER", "AdaptdLearner", "BenchLearner",
           "LearnerSpec", "Trace", "Unsupported", "adaptd_flags", "feature_dicts",
           "learner_specs", "standardized"]

#: Every learner of the suite, in report order. ``river-linear`` is the throughput reference.
LEARNERS: tuple[LearnerSpec, ...] = (
    *ADAPTD,
    *PEERS,
    *VARIANTS,
)

#: The learner whose records/s every other learner's is divided by.
REFERENCE_LEARNER = "river-linear"


def learner_specs(names: list[str] | None = None) -> list[LearnerSpec]:
    """The specs named (all when ``None``), in suite order; unknown names raise ValueError."""
    if names is None:
        return list(LEARNERS)
    known = {spec.name: spec for spec in LEARNERS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown learners {unknown}; known: {sorted(known)}")
    return [spec for spec in LEARNERS if spec.name in names]
