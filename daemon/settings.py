"""The settings: plain dataclasses, one per ``[section]``, and the top-level run settings.

Each section's ``__post_init__`` validates its own values and raises ``ValueError`` naming the
field; :class:`Settings` checks what spans sections (``regret.baseline_window`` against
``learner.window``, the model against the task). :mod:`adaptd.config` turns those errors into
one-line configuration errors naming the key and where it came from. This module imports
nothing but the standard library, so reading settings costs nothing (no torch, no NumPy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DetectorName = Literal["page_hinkley", "adwin", "kswin", "oracle", "none"]
TaskKind = Literal["regression", "classification"]


@dataclass
class LearnerConfig:
    """Model shape, inner step rule and per-key state bounds of the learner.

    The inner step on each labelled record, on the key's support window W (the last
    ``window`` labelled records of its current segment), is ARUBA++'s
    ``g = ∇L(θ; W);  A += c·g²;  θ −= α·sqrt(B/A) ⊙ g`` (written once, in
    :mod:`adaptd.learner.step`; B and A₀ come from :mod:`adaptd.meta.state`).

    The benchmark variants are built from config alone:

    - adaptd: defaults (``meta.enabled = true``, ``drift.detector = "page_hinkley"``) plus
      ``--meta FILE`` from ``adaptd meta-train``.
    - oracle change points: ``drift.detector = "oracle"`` (segments by the records' ``task``).
    - plain AdaGrad never reset: ``drift.detector = "none"``, ``meta.enabled = false``.
    - plain AdaGrad reset at each detected drift to its random init:
      ``meta.enabled = false`` (and no ``--meta`` file).

    Args:
        lr: AdaGrad's step size; ``B = lr²`` before any meta-learning and for the baseline.
        eps: initial value of the accumulators A before any meta-learning.
        c: the weight of g² in ``A += c·g²`` (and ``A₀ = G/c`` at a task's start).
        window: support-window length k. 5 (was 10): each record costs a forward and backward
            pass per window entry (the MLP's main cost); sinusoid MSE 0.240 against 0.255 at
            10 with the other defaults; on the real streams under ``auto`` chessweka +2.2
            points, ludata −0.3, ImageSegments −0.6, ChickWeights MSE −16 %, the rest within
            0.3 points or better (``benchmarks/results/mlp.md``).
        hidden: hidden-layer widths of the ``mlp`` model.
        activation: ``tanh`` or ``relu`` for the ``mlp`` hidden units.
        init_seed: seed of the random initialization (when no meta-state file is given).
        hypergradient: adapt a global step multiplier α online (Baydin et al. 2018, "Online
            Learning Rate Adaptation with Hypergradient Descent", ICLR).
        hypergradient_lr: the hypergradient step size β_h.
        max_keys: most keys with live task state; the least recently seen are evicted beyond.
            Each live key holds two rows (its own and the shadow baseline's) of about
            ``8·(4P + k·(d+3) + buffer·(d+2))`` bytes: P parameters, k = ``window``, d features,
            ``regret.buffer`` hindsight records (about 25 kB for logistic d = 10, 120 kB for
            the 1-40-40-1 MLP) of address space; most of the hindsight rows are never
            resident. Past a quarter of ``max_keys`` the arrays grow to all of it at once, or,
            when the machine cannot give that, to the keys held; when those do not fit either
            the daemon stops (exit 2) with a line naming this setting.
        idle_evict_s: a key unseen this long is evicted by :meth:`evict_idle`.
        kernel: use the compiled per-record kernel (:mod:`adaptd.learner.kernel`) where it
            applies (linear/logistic/MLP, Page-Hinkley/oracle/none, no hypergradient); same
            results as the batched NumPy waves (:mod:`adaptd.learner.paths`), much less
            overhead per record.
        standardize: standardize features online inside the model (running mean and
            variance shared by all keys and tasks, kept across drift resets; see
            :mod:`adaptd.learner.scaling`), so raw scales (a feature in 0..1000) need no
            pipeline step in front. ``false`` feeds features as they come.
        standardize_target: regression only: learn ``(y − mean)/std`` with the statistics
            known before each chunk of records and map predictions back, so a target near 1000
            works like one near 1; losses, regret and ``loss`` stay in the user's units.
    """

    lr: float = 0.1
    eps: float = 1e-6
    c: float = 1.0
    window: int = 5
    hidden: list[int] = field(default_factory=lambda: [40, 40])
    activation: Literal["tanh", "relu"] = "tanh"
    init_seed: int = 0
    hypergradient: bool = False
    hypergradient_lr: float = 1e-3
    max_keys: int = 10_000
    idle_evict_s: float = 3600.0
    kernel: bool = True
    standardize: bool = True
    standardize_target: bool = True

    def __post_init__(self) -> None:
        for name in ("lr", "eps", "c", "hypergradient_lr", "idle_evict_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if not self.hidden or any(int(h) < 1 for h in self.hidden):
            raise ValueError(f"hidden must be a non-empty list of widths >= 1, got {self.hidden}")
        if self.max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {self.max_keys}")


@dataclass
class DriftConfig:
    """The ``[drift]`` settings section.

    Args:
        detector: ``page_hinkley`` (default), ``adwin``, ``kswin``, ``oracle`` (segment by the
            records' ``task`` field) or ``none`` (never reset: the plain-AdaGrad variant).
        warmup: losses at the start of each segment that the detector does not see.
        carry: most recent support-window records carried into the new segment on an alarm
            (they arrived after the change the alarm is late for); the new task takes one
            step on them at once.

            Defaults warmup 3, ``ph_min_instances`` 3, carry 1 (were 10, 10, 0): on the
            sinusoid a third of the changes went undetected, most within the 20 records after
            an alarm during which the detector was blind, and an alarm mostly fires on the
            first record of the new task, which the new task should learn from. Sinusoid MSE
            0.344 → 0.302 with the window and meta settings of the time, equal accuracy on the
            real classification streams (``benchmarks/results/mlp.md``).
        ph_threshold: Page-Hinkley's λ, in units of the (relative or raw) loss. Unset: 20 in
            relative mode, 50 (river's default) in raw mode. Measured (benchmark tuning seed
            11, 15k records): relative 20 against raw 10 gives sinusoid MSE 0.309 / 0.318,
            linear-tasks 1.50 / 2.16, friedman 5.84 / 5.98 with 83 / 574 alarms; on a
            stationary logistic stream raw 50 gives 1-2 false alarms per 20k records, raw 10
            61-252, relative 20 60-67.
        ph_delta: Page-Hinkley's δ, the tolerated drift of the mean.
        ph_alpha: Page-Hinkley's forgetting factor.
        ph_min_instances: losses the Page-Hinkley test sees before it may alarm.
        ph_mode: ``up`` (alarm on a loss increase; default), ``down`` or ``both``.
        ph_relative: test each loss divided by the mean of the losses the detector saw before
            it in this segment, so λ and δ are in multiples of the key's own loss level and
            one setting fits any loss scale. ``false`` is river's test on raw losses. Unset:
            relative for regression (squared error has the scale of y², unknown in advance),
            raw for classification (log loss has a known scale, and its heavy tail — a
            confident mistake costs hundreds of times the mean — makes ratios noisy).
        adwin_delta: ADWIN's confidence.
        kswin_alpha, kswin_window_size, kswin_stat_size: KSWIN's parameters.
        seed: seed of the KSWIN samplers.
    """

    detector: DetectorName = "page_hinkley"
    warmup: int = 3
    carry: int = 1
    ph_threshold: float | None = None
    ph_delta: float = 0.005
    ph_alpha: float = 1 - 0.0001
    ph_min_instances: int = 3
    ph_mode: Literal["up", "down", "both"] = "up"
    ph_relative: bool | None = None
    adwin_delta: float = 0.002
    kswin_alpha: float = 0.005
    kswin_window_size: int = 100
    kswin_stat_size: int = 30
    seed: int = 0

    def __post_init__(self) -> None:
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.carry < 0:
            raise ValueError(f"carry must be >= 0, got {self.carry}")
        if self.ph_threshold is not None and not self.ph_threshold > 0:
            raise ValueError(f"ph_threshold must be > 0, got {self.ph_threshold}")
        if self.ph_delta < 0:
            raise ValueError(f"ph_delta must be >= 0, got {self.ph_delta}")
        if not 0 < self.ph_alpha <= 1:
            raise ValueError(f"ph_alpha must be in (0, 1], got {self.ph_alpha}")
        if self.ph_min_instances < 1:
            raise ValueError(f"ph_min_instances must be >= 1, got {self.ph_min_instances}")
        if not 0 < self.adwin_delta < 1:
            raise ValueError(f"adwin_delta must be in (0, 1), got {self.adwin_delta}")
        if not 0 < self.kswin_alpha < 1:
            raise ValueError(f"kswin_alpha must be in (0, 1), got {self.kswin_alpha}")
        if not 0 < self.kswin_stat_size < self.kswin_window_size:
            raise ValueError(
                f"kswin_stat_size must be in (0, kswin_window_size={self.kswin_window_size}), "
                f"got {self.kswin_stat_size}"
            )


@dataclass
class MetaConfig:
    """The ``[meta]`` settings section.

    Args:
        enabled: meta-learn online (θ0, B, G move as segments close). ``False`` keeps the
            initial state for ever: with no ``--meta`` file that is plain AdaGrad from a fixed
            random init, reset to that init at each drift (benchmark variant "AdaGrad reset").
        algorithm: ``reptile`` (default) or ``fomaml`` for the θ0 update.
        step: β, the meta step size of the θ0 update. 0.3 (was 0.1): sinusoid MSE (MLP,
            meta-trained, ``benchmarks/engine_quality.py``) 0.239 against 0.279 at window 3 and
            the other defaults, and a cold start learns faster (the README's first example);
            0.5 measured 0.273 (``benchmarks/results/mlp.md``).
        decay: d in [0, 1), the forgetting of the B and G statistics per closed task.
        epsilon, zeta, power: the ε²/(t+1)^p and ζ²/(t+1)^p regularizers of B and G.
        min_segment: labelled records a segment needs before its close updates the meta-state.
        library: closed task states kept per key and tried at each of the first 8 records
            after a drift alarm against the state started from θ0
            (:mod:`adaptd.learner.concepts`); 0 turns concept reuse off. Default 8: with the
            default model it lowered the loss by 19% on recurring linear tasks and 29% on a
            stationary stream (false alarms undone), changed nothing on the real streams, and
            averaged 0.975 of the loss on the bench's synthetic streams (0.75 to 1.15;
            ``benchmarks/results/concepts.md``). Memory: up to N·P floats per key and model.
        learn_rates: update B and G (ARUBA); ``False`` learns θ0 only.
    """

    enabled: bool = True
    algorithm: Literal["reptile", "fomaml"] = "reptile"
    step: float = 0.3
    decay: float = 0.03
    epsilon: float = 1e-3
    zeta: float = 1e-3
    power: float = 1.0
    min_segment: int = 10
    learn_rates: bool = True
    library: int = 8

    def __post_init__(self) -> None:
        if not 0 < self.step <= 1:
            raise ValueError(f"step must be in (0, 1], got {self.step}")
        if not 0 <= self.decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {self.decay}")
        for name in ("epsilon", "zeta", "power"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.min_segment < 1:
            raise ValueError(f"min_segment must be >= 1, got {self.min_segment}")
        if self.library < 0:
            raise ValueError(f"library must be >= 0, got {self.library}")


@dataclass
class RegretConfig:
    """The ``[regret]`` settings section.

    Args:
        baseline: run the shadow baseline (costs one more row per step).
        baseline_window: records in the baseline's gradient. 1 (default) is textbook AdaGrad
            (Duchi, Hazan, Singer 2011) on each record's own gradient; ``learner.window``
            makes it the engine with resets and meta-learning switched off (the benchmarks'
            "AdaGrad never reset" variant).
        baseline_thread: run the baseline rows on a second thread while the keys' rows run
            (:mod:`adaptd.learner.shadow`; the same results; used with more than one CPU).
        hindsight: fit the hindsight comparator on each closed segment.
        buffer: records of a segment kept for the hindsight fit (the most recent ones); they
            are part of each key's checkpointed state, so this bounds checkpoint size too.
        hindsight_steps: Newton steps of the classification fit (AdaGrad steps for user modules).
        hindsight_lr: AdaGrad step size of the user-module fit.
    """

    baseline: bool = True
    baseline_window: int = 1
    baseline_thread: bool = True
    hindsight: bool = True
    buffer: int = 200
    hindsight_steps: int = 20
    hindsight_lr: float = 0.05

    def __post_init__(self) -> None:
        if self.baseline_window < 1:
            raise ValueError(f"baseline_window must be >= 1, got {self.baseline_window}")
        if self.buffer < 1:
            raise ValueError(f"buffer must be >= 1, got {self.buffer}")
        if self.hindsight_steps < 0:
            raise ValueError(f"hindsight_steps must be >= 0, got {self.hindsight_steps}")
        if not self.hindsight_lr > 0:
            raise ValueError(f"hindsight_lr must be > 0, got {self.hindsight_lr}")


@dataclass
class LabelsConfig:
    """The ``[labels]`` settings section.

    Args:
        ttl_s: seconds a prediction waits for its delayed label.
        capacity: most predictions waiting at once; beyond it the oldest is dropped.
    """

    ttl_s: float = 3600.0
    capacity: int = 100_000

    def __post_init__(self) -> None:
        if not self.ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0, got {self.ttl_s}")
        if self.capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {self.capacity}")


@dataclass
class CheckpointConfig:
    """The ``[checkpoint]`` settings section: where state goes besides the state dir.

    Every checkpoint writes the keys that changed and each partition's next position to
    ``STATE_DIR/state.db`` in one transaction (see :mod:`adaptd.checkpoint`).

    Args:
        changelog: Kafka sources only: also append each checkpoint's changed key states and
            positions to the compacted topic ``<topic>.<group>.adaptd-changelog``, from which a
            replica newly assigned a partition restores it (see :mod:`adaptd.changelog`); the
            local state dir is then only a cache, and replicas need no shared volume.
        meta_topic: Kafka sources only: publish this replica's meta-state to the compacted
            topic ``<topic>.<group>.adaptd-meta`` and merge the group's, weighted by tasks.
        meta_merge_interval_s: seconds between merges of the published meta-states (also done
            at start).
        give_up_after_s: how long the state dir may refuse checkpoints (read-only, full) before
            the daemon stops with exit 1; it retries with the resilience backoff meanwhile,
            without polling. 0 gives up at the first refusal.
        max_time_share: a checkpoint due by ``checkpoint_every_records`` waits until the
            time since the last one is at least ``(1 − share)/share`` times what that one took
            (a minimum pause between checkpoints, as Flink's
            ``execution.checkpointing.min-pause``, here scaled to their cost), so thousands of
            busy keys stretch the cadence instead of the run. ``checkpoint_interval_s`` still
            holds, and no checkpoint waits while evicted keys wait in memory for it. 1 turns
            it off.
    """

    changelog: bool = True
    meta_topic: bool = True
    meta_merge_interval_s: float = 60.0
    give_up_after_s: float = 60.0
    max_time_share: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.max_time_share <= 1:
            raise ValueError(f"max_time_share must be in (0, 1], got {self.max_time_share}")
        if not self.meta_merge_interval_s > 0:
            raise ValueError(
                f"meta_merge_interval_s must be > 0, got {self.meta_merge_interval_s}")
        if not self.give_up_after_s >= 0:
            raise ValueError(f"give_up_after_s must be >= 0, got {self.give_up_after_s}")


@dataclass
class ResilienceConfig:
    """The ``[resilience]`` settings section: how the runner rides out faults.

    Args:
        retry_backoff_initial_s: first wait after the source became unavailable; doubles on
            each failed retry up to ``retry_backoff_max_s``.
        retry_backoff_max_s: longest wait between retries.
        sink_backlog_limit: unacknowledged sink messages above which the source is paused; it
            resumes below half of it.
    """

    retry_backoff_initial_s: float = 0.2
    retry_backoff_max_s: float = 5.0
    sink_backlog_limit: int = 50_000

    def __post_init__(self) -> None:
        if not self.retry_backoff_initial_s > 0:
            raise ValueError(
                f"retry_backoff_initial_s must be > 0, got {self.retry_backoff_initial_s}")
        if self.retry_backoff_max_s < self.retry_backoff_initial_s:
            raise ValueError(
                f"retry_backoff_max_s must be >= retry_backoff_initial_s, "
                f"got {self.retry_backoff_max_s}")
        if self.sink_backlog_limit < 1:
            raise ValueError(f"sink_backlog_limit must be >= 1, got {self.sink_backlog_limit}")


@dataclass
class Settings:
    """Everything the daemon can be told. Top-level fields are the ``run`` flags."""

    source: str | None = None
    sink: str | None = None
    dead_letter: str | None = None
    #: Checkpoints and the default dead-letter file; a run resumes from what it holds.
    state_dir: str = "adaptd-state"
    #: /metrics, /healthz, /readyz and the live page; None (``off``) serves no HTTP, 0 any port.
    metrics_port: int | None = 9464
    metrics_host: str = "127.0.0.1"
    #: ``auto``: Hedge over linear, MLP, prior and last-label experts per key
    #: (:mod:`adaptd.learner.ensemble`); the others run one model.
    model: Literal["auto", "linear", "logistic", "mlp"] = "auto"
    task: Literal["regression", "classification"] = "regression"
    meta: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    n_features: int | None = None
    max_record_bytes: int = 1 << 20
    #: Most records per poll. A poll takes only what the source has ready, so a larger cap
    #: adds no wait: it only spreads the per-batch work over more records when they queue
    #: (the file path: about 0.5 ms of per-batch work a batch; 4096 took a tenth off the CPU
    #: time of 1M records against 1024). A file source also stops at about 8 MiB a poll.
    batch_size: int = 4096
    poll_timeout_s: float = 0.2
    #: A checkpoint is due after this many records, unless the last one took more than its
    #: share of the time (``[checkpoint] max_time_share``): then it waits, at most until
    #: ``checkpoint_interval_s`` after the last one. Each checkpoint syncs the sinks and the
    #: store to disk (a few ms of fsync even for one key): at 10,000 a fast file source paid
    #: that 25 times a second, for a replay after a crash of about 40 ms. 100,000 is under a
    #: second of records at the file path's speed and about 8 s at Kafka's.
    checkpoint_every_records: int = 100_000
    checkpoint_interval_s: float = 30.0
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    meta_learning: MetaConfig = field(default_factory=MetaConfig)
    regret: RegretConfig = field(default_factory=RegretConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    resilience: ResilienceConfig = field(default_factory=ResilienceConfig)

    def __post_init__(self) -> None:
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port must be in [0, 65535], got {self.metrics_port}")
        if self.n_features is not None and self.n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {self.n_features}")
        for name in ("max_record_bytes", "batch_size", "checkpoint_every_records"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("poll_timeout_s", "checkpoint_interval_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.model == "logistic" and self.task != "classification":
            raise ValueError("model=logistic needs task=classification")
        if self.regret.baseline_window > self.learner.window:
            raise ValueError(
                f"regret.baseline_window must be <= learner.window "
                f"({self.learner.window}), got {self.regret.baseline_window}")
