"""The kafka-python client (the default, ``client=kafka-python``): source, topic admin, and
the rate limit on its log lines. The sink is in :mod:`adaptd.connectors.kafka_python_sink`.

The consumer's fetcher scans whole record batches into columns
(:mod:`adaptd.connectors.kafka_python_records`), so no kafka-python record object is built, and
:meth:`KafkaPythonSource.poll_many` hands the daemon runs of one partition.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from kafka import ConsumerRebalanceListener

from adaptd.connectors import kafka_python_records
from adaptd.connectors.base import PartitionListener, RecordRun, SourceRecord
from adaptd.connectors.kafka_common import KafkaSourceBase, as_run
from adaptd.connectors.kafka_options import IDLE_AFTER_S, KafkaClientOptions
from adaptd.connectors.kafka_python_chunks import Segment, leading_run, warm_in_background
from adaptd.errors import UnavailableError

log = logging.getLogger(__name__)


#: What varies between two lines of one kafka-python message: addresses and numbers.
_VARYING = re.compile(r"0x[0-9a-fA-F]+|\d+(?:\.\d+)?")


class _OncePerInterval(logging.Filter):
    """Lets each distinct kafka-python message template through once per ``interval_s``.

    While a broker is down kafka-python logs every reconnect attempt, thousands of lines a
    second; the daemon's own log lines say what is going on, once.
    """

    def __init__(self, interval_s: float = 30.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL:
            return True
        now = time.monotonic()
        # Numbers and addresses out: some messages come formatted ("Task <… at 0x7f…> ran for
        # 0.122s … blocking the event loop", each time the GIL kept kafka-python's I/O thread
        # waiting, as a cold start's minute of compiling does).
        template = (record.name, _VARYING.sub("#", str(record.msg)))
        if now - self._last.get(template, -self.interval_s) < self.interval_s:
            return False
        if len(self._last) > 10_000:  # bounded even if templates vary
            self._last.clear()
        self._last[template] = now
        return True


_QUIET = _OncePerInterval()


def quiet_client_logs() -> None:
    """Rate-limit kafka-python's own log lines. Idempotent; called once its modules are
    imported (a logger's filters do not apply to its children, so each gets the filter)."""
    for name, logger in list(logging.root.manager.loggerDict.items()):
        ours = name == "kafka" or name.startswith("kafka.")
        if ours and isinstance(logger, logging.Logger) and _QUIET not in logger.filters:
            logger.addFilter(_QUIET)


def forbid_topic_creation(consumer: Any) -> None:
    """Make ``consumer``'s metadata requests ask the broker not to create the topics they name.

    kafka-python 3.0 takes ``allow_auto_create_topics=False`` but does not pass it on to the
    cluster metadata its connection manager builds (``kafka/net/manager.py``), so every
    metadata request still says ``allow_auto_topic_creation=True``: a daemon started before its
    input topic exists created it, with the broker's default partition count (4 on Tansu),
    and the user's producer then wrote into those partitions instead of the ones it asked for.
    Called right after the consumer is built, before it subscribes (its bootstrap asked for no
    topic)."""
    cluster = getattr(getattr(consumer, "_client", None), "cluster", None)
    config = getattr(cluster, "config", None)
    if isinstance(config, dict) and "allow_auto_create_topics" in config:
        config["allow_auto_create_topics"] = False


def ensure_topic(options: KafkaClientOptions, partitions: int) -> bool:
    """Create ``options.topic`` with ``partitions`` partitions unless it exists. Blocks.

    Returns True if it was created. Raises :class:`UnavailableError` if no broker answers.
    """
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    try:
        admin = KafkaAdminClient(**options.client_config())
    except KafkaError as exc:
        raise UnavailableError(f"{options.where}: no broker reachable: {exc}") from exc
    try:
        if options.topic in admin.list_topics():
            return False
        admin.create_topics([NewTopic(options.topic, partitions, 1)])
        log.info("created topic %s with %d partitions", options.where, partitions)
        return True
    except TopicAlreadyExistsError:
        return False
    except KafkaError as exc:
        raise UnavailableError(f"{options.where}: creating the topic failed: {exc}") from exc
    finally:
        admin.close()


class KafkaPythonSource(KafkaSourceBase):
    """Reads one topic through kafka-python's ``KafkaConsumer``.

    Raises :class:`UnavailableError` from :meth:`open` and :meth:`poll` while no broker can be
    reached; the daemon retries with backoff, and the consumer reconnects by itself.
    """

    _consumer: Any  # set up by KafkaSourceBase
    _in_rebalance = False
    #: Where the consumer puts the chunk parts each poll took (kafka_python_records.install);
    #: None: it hands out kafka-python's own records.
    _segments: list[Segment] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Chunk parts polled but not handed out yet: a poll returns one partition's run, so
        #: what a fetch held of the next partition waits for the next poll.
        self._carry: list[Segment] = []
        #: The consumer's fetcher settings (the fetch wait is changed there: see _pace_fetches).
        self._fetch_config: dict[str, Any] | None = None
        self._records_at = 0.0  # monotonic time of the last poll that returned records

    def open(
        self, start_positions: Mapping[int, int], listener: PartitionListener | None = None
    ) -> None:
        """Connect and subscribe (with a group) or assign every partition (without). Blocks
        up to ``bootstrap_timeout_ms``; raises :class:`UnavailableError` if no broker answers.
        Calling it again after a failure retries."""
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        if self._consumer is not None:
            return
        warm_in_background()
        self._listener = listener
        self._start_positions = dict(start_positions)
        o = self.options
        config = o.client_config()
        config.update(
            group_id=o.group,
            enable_auto_commit=False,
            # Reading must not create topics (with the broker's default partition count).
            allow_auto_create_topics=False,
            auto_offset_reset=o.auto_offset_reset,
            max_poll_records=o.max_poll_records,
            fetch_max_wait_ms=o.fetch_max_wait_ms,
            session_timeout_ms=o.session_timeout_ms,
            heartbeat_interval_ms=o.heartbeat_ms,
            max_poll_interval_ms=o.max_poll_interval_ms,
        )
        quiet_client_logs()
        try:
            consumer: Any = KafkaConsumer(**config)
        except KafkaError as exc:
            raise UnavailableError(f"{o.where}: no broker reachable: {exc}") from exc
        forbid_topic_creation(consumer)
        quiet_client_logs()
        self._segments = kafka_python_records.install(consumer)
        config = getattr(getattr(consumer, "_fetcher", None), "config", None)
        self._fetch_config = config if isinstance(config, dict) else None
        self._records_at = time.monotonic()
        self._carry = []
        try:
            if o.group is not None:
                consumer.subscribe([o.topic], listener=_Rebalance(self))
                log.info("%s: joining consumer group %r", o.where, o.group)
            else:
                partitions = consumer.partitions_for_topic(o.topic)
                if not partitions:
                    raise UnavailableError(f"{o.where}: the topic does not exist (yet)")
                self._consumer = consumer
                consumer.assign([self._tp(p) for p in sorted(partitions)])
                self._on_assigned(sorted(partitions))
        except KafkaError as exc:
            consumer.close(autocommit=False)
            self._consumer = None
            raise UnavailableError(f"{o.where}: {exc}") from exc
        except BaseException:
            consumer.close(autocommit=False)
            self._consumer = None
            raise
        self._consumer = consumer

    def close(self) -> None:
        self._carry = []
        self._commit_last()
        self._release(lambda consumer: consumer.close(autocommit=False))

    def poll(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        """Fetch up to ``max_records``. Rebalance callbacks run inside this call."""
        polled = self.poll_many(max_records, timeout_s)
        return polled.records() if isinstance(polled, RecordRun) else polled

    def poll_many(self, max_records: int, timeout_s: float) -> list[SourceRecord] | RecordRun:
        """Up to ``max_records`` of one partition: a run when their positions are consecutive.
        What a fetch held beyond them waits here for the next poll (dropped if its partition
        is revoked or sought). Rebalance callbacks run inside this call."""
        from kafka.errors import KafkaError

        max_records = self._budget(max_records)
        if max_records <= 0:
            return []
        segments = self._segments
        if self._carry and not self._paused:
            polled, self._carry = leading_run(self._carry, max_records)
            self._returned += len(polled)
            return polled
        try:
            if segments is not None:
                segments.clear()  # what an earlier poll that raised may have left
            batches = self._consumer.poll(
                timeout_ms=int(timeout_s * 1000), max_records=max_records
            )
        except KafkaError as exc:
            raise UnavailableError(f"{self.options.where}: {exc}") from exc
        self._pace_fetches(bool(batches))
        if not batches and not self._broker_connected():
            raise UnavailableError(f"{self.options.where}: no connection to any broker")
        if not batches:
            return []
        if segments is not None:  # the fetcher scanned the batches into chunks
            if not segments:  # records not read by BatchPartitionRecords: never skip them
                raise RuntimeError(f"{self.options.where}: kafka-python returned records "
                                   "the batch reader did not read")
            polled, self._carry = leading_run(list(segments), max_records)
            segments.clear()
        else:
            record = SourceRecord
            polled = []
            for tp, messages in batches.items():
                p = tp.partition
                # Positional arguments: half the cost of keywords, on the one per-record line.
                polled += [record(p, m.offset, m.value or b"", m.key, m.timestamp)
                           for m in messages]
            polled = as_run(polled)
        self._returned += len(polled)
        return polled

    def _pace_fetches(self, got_records: bool) -> None:
        """Fetch with ``fetch_max_wait_ms`` while records come, with ``idle_fetch_max_wait_ms``
        once none came for :data:`IDLE_AFTER_S`. The short wait is what a record waits on a
        broker that holds a fetch for all of it (Tansu) and costs nothing while records come
        (a fetch that finds records is answered at once); the long one keeps an idle daemon
        from waking for an empty fetch every few milliseconds. kafka-python reads the wait
        from its fetcher's settings for each fetch request it builds."""
        config, o = self._fetch_config, self.options
        if config is None or o.idle_fetch_max_wait_ms == o.fetch_max_wait_ms:
            return
        now = time.monotonic()
        if got_records:
            self._records_at = now
        idle = now - self._records_at > IDLE_AFTER_S
        config["fetch_max_wait_ms"] = o.idle_fetch_max_wait_ms if idle else o.fetch_max_wait_ms

    def _broker_connected(self) -> bool:
        # kafka-python reports no error while it cannot reach a broker: it retries inside
        # poll() and returns nothing. Looking at its connections is the only way to tell
        # "no new records" from "no broker", which /readyz and the logs must tell apart.
        client = getattr(self._consumer, "_client", None)
        if client is None:
            return True
        brokers = [b.node_id for b in client.cluster.brokers()]
        if not brokers:
            return False
        return any(client.connected(node) for node in brokers)

    def _commit(self, positions: Mapping[int, int], wait: bool) -> None:
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        offsets = {self._tp(p): OffsetAndMetadata(n, "", -1) for p, n in positions.items()}
        try:
            # Rebalance callbacks run on kafka-python's I/O thread, which cannot wait for its
            # own commit.
            if wait and not self._in_rebalance:
                self._consumer.commit(offsets)
            else:
                self._consumer.commit_async(offsets, callback=self._committed)
        except KafkaError as exc:
            log.warning("%s: committing offsets failed (the checkpoint holds them): %s",
                        self.options.where, exc)

    def _committed(self, _offsets: Any, result: Any) -> None:
        if isinstance(result, Exception):
            log.warning("%s: committing offsets failed (the checkpoint holds them): %s",
                        self.options.where, result)

    def _tp(self, partition: int) -> Any:
        from kafka import TopicPartition

        return TopicPartition(self.options.topic, partition)

    def _drop_carry(self, partitions: Collection[int]) -> None:
        """Forget records polled but not handed out of ``partitions``: they were revoked, or
        are sought to where the daemon resumes them."""
        self._carry = [s for s in self._carry if s[0].partition not in partitions]

    def _revoked(self, partitions: Collection[int]) -> None:
        self._drop_carry(partitions)
        super()._revoked(partitions)

    def _lost(self, partitions: Collection[int]) -> None:
        self._drop_carry(partitions)
        super()._lost(partitions)

    def _on_assigned(self, partitions: Sequence[int]) -> None:
        """Seek newly assigned partitions to the daemon's positions, else to the reset policy."""
        self._drop_carry(partitions)
        known, unknown = self._positions_for(partitions)
        consumer = self._consumer
        for p, position in known.items():
            consumer.seek(self._tp(p), position)
        unknown_tps = [self._tp(p) for p in unknown]
        if unknown_tps and self.options.auto_offset_reset == "earliest":
            consumer.seek_to_beginning(*unknown_tps)
        elif unknown_tps:
            consumer.seek_to_end(*unknown_tps)
        if self._paused:
            consumer.pause(*[self._tp(p) for p in partitions])

    def lag(self) -> Mapping[int, int]:
        """Records behind the high-water mark the last fetch reported. Approximate: some
        brokers (Tansu) report a high-water mark that trails the last batch."""
        from kafka.errors import KafkaError

        if self._consumer is None:
            return {}
        out = {}
        for p in self._assigned:
            tp = self._tp(p)
            high = self._consumer.highwater(tp)
            if high is None:
                continue
            try:
                position = self._consumer.position(tp, timeout_ms=0)
            except KafkaError:  # position unknown until the first fetch after a seek
                position = None
            if position is not None:
                out[p] = max(0, int(high) - int(position))
        return out

    def pause(self) -> None:
        self._paused = True
        if self._consumer is not None:
            self._consumer.pause(*[self._tp(p) for p in self._assigned])

    def resume(self) -> None:
        self._paused = False
        if self._consumer is not None:
            self._consumer.resume(*self._consumer.paused())


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Adapts kafka-python's ConsumerRebalanceListener to the shared partition glue."""

    def __init__(self, source: KafkaPythonSource) -> None:
        self.source = source

    # kafka-python calls these on its I/O thread, but only while the daemon's thread waits
    # inside KafkaConsumer.poll(), so they never run alongside record processing.

    def on_partitions_revoked(self, revoked: Collection[Any]) -> None:
        self._call(self.source._revoked, revoked)

    def on_partitions_assigned(self, assigned: Collection[Any]) -> None:
        self._call(self.source._on_assigned, assigned)

    def on_partitions_lost(self, lost: Collection[Any]) -> None:
        self._call(self.source._lost, lost)

    def _call(self, method: Any, tps: Collection[Any]) -> None:
        self.source._in_rebalance = True
        try:
            method([tp.partition for tp in tps])
        finally:
            self.source._in_rebalance = False
