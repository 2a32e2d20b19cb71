"""The Kafka loop every service shares: consume a batch, process, produce, confirm, commit.

Guarantees (at-least-once):
- input offsets are committed only after every output and dead letter of the batch has been
  acknowledged by the broker; a crash before that re-delivers the batch;
- a message that cannot be decoded, fails validation, or makes the handler fail on its own goes to
  the dead-letter topic with the reason, is counted, and its offset is committed with the batch:
  one bad message never stalls its partition;
- a transient failure (:class:`RetryableError`: a store or model server down, a delivery that the
  broker did not confirm) rewinds the batch's partitions and retries it with capped exponential
  backoff, committing nothing meanwhile; a failed delivery also replaces the producer (a broker
  that lost its state refuses the old idempotent producer id for good);
- what one consume returns is cut into batches of at most ``max_batch_bytes``, so what a handler
  holds at once is bounded by size, not only by count;
- SIGTERM/SIGINT finish the batch in hand, commit, leave the group and flush the producer;
- a tombstone (a key with a null value: Kafka's "delete this key") is passed on to the output
  topic under the same key, in order with the records around it, unless the handler applies
  tombstones itself (the sink); a tombstone without a key is dead-lettered.

Re-delivery makes duplicates possible; downstream they are harmless because every output carries a
deterministic ``event_id`` and the graph store MERGEs on (head, tail, relation, doc_id).
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Generic, Self, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from pydantic import BaseModel, ValidationError

from lmrc.runtime import metrics
from lmrc.runtime.deadletter import (
    UnprocessableMessageError,
    fitted_dead_letter,
    rejection_from_validation,
)
from lmrc.runtime.health import HealthServer
from lmrc.runtime.settings import BUSY_POLL_SECONDS, ServiceSettings
from lmrc.runtime.topics import ensure_topics

log = logging.getLogger(__name__)

EventT = TypeVar("EventT", bound=BaseModel)
ResultT = TypeVar("ResultT")


#: What a record adds to its value on the wire (headers, key, framing), within the producer's limit.
RECORD_OVERHEAD_BYTES = 4096


def produce_when_room(
    producer: Producer, topic: str, key: str | None, value: bytes | None, on_delivery: Any
) -> None:
    """``producer.produce``, waiting (serving delivery reports) while its local queue is full."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.1)


def byte_bounded_batches(records: list[Message], max_bytes: int) -> list[list[Message]]:
    """``records`` in order, cut into batches whose values add up to at most ``max_bytes`` (a
    larger record makes a batch of its own): what a handler holds at once is bounded by bytes,
    not only by count (64 relation sets of 1 MB each took the sink to 6.5 GB)."""
    batches: list[list[Message]] = []
    size = 0
    for record in records:
        length = len(record.value() or b"")
        if not batches or size + length > max_bytes:
            batches.append([])
            size = 0
        batches[-1].append(record)
        size += length
    return batches


def record_time_ms(message: Message) -> int:
    """The record's timestamp in milliseconds (its CreateTime, or the broker's LogAppendTime),
    0 where the record has none: what orders a document's versions when the publisher set none."""
    timestamp_type, timestamp = message.timestamp()
    return max(0, int(timestamp)) if timestamp_type and timestamp is not None else 0


@dataclass(frozen=True)
class Tombstone:
    """A record with a key and no value: delete the document ``key`` names."""

    key: str


class RetryableError(Exception):
    """A failure that may go away (dependency down, broker did not confirm): retry the batch."""


@dataclass(frozen=True)
class Consumed(Generic[EventT]):
    """A decoded input event and the Kafka message it came from."""

    event: EventT
    message: Message


@dataclass(frozen=True)
class Output:
    """An event to produce (None: a tombstone); ``topic`` defaults to the service's output topic.
    ``source`` is the input it came from: when the output cannot be produced (larger than the
    broker takes), that input is dead-lettered instead and the partition moves on."""

    value: BaseModel | None
    key: str | None = None
    topic: str | None = None
    source: Consumed[Any] | None = None


@dataclass
class BatchResult:
    """What a handler made of a batch: outputs, and inputs it rejected (to be dead-lettered)."""

    outputs: list[Output] = field(default_factory=list)
    rejected: list[tuple[Consumed[Any], UnprocessableMessageError]] = field(default_factory=list)

    def extend(self, other: BatchResult) -> None:
        self.outputs.extend(other.outputs)
        self.rejected.extend(other.rejected)


class Handler(Generic[EventT]):
    """A service's logic, run by :class:`ServiceRuntime` between ``start`` and ``close``.

    ``start`` acquires what ``handle`` needs (an HTTP client, an event loop, a store connection);
    ``close`` releases it and runs once, also after a failure. ``handle`` may raise RetryableError
    for the whole batch. Outside a runtime (evaluation, tests) a handler is a context manager.
    """

    input_model: type[BaseModel]
    #: False: the runtime passes tombstones on to the output topic itself, in order, and the
    #: handler never sees one; True: they reach ``handle`` as ``Consumed(Tombstone(key), ...)``.
    handles_tombstones: bool = False

    def start(self) -> None:
        """Acquire resources; called once before the first batch."""

    def handle(self, batch: Sequence[Consumed[EventT]]) -> BatchResult:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources; called once after the last batch."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class ServiceRuntime:
    """Runs one handler against Kafka with the guarantees described in this module."""

    def __init__(self, settings: ServiceSettings, handler: Handler[Any]) -> None:
        self.settings = settings
        self.handler = handler
        self.service = settings.service_name
        metrics.initialize(self.service)
        self._stop = threading.Event()
        self._last_heartbeat = time.monotonic()
        self._batch_started: float | None = None
        self._running = False
        self._assignment: set[tuple[str, int]] = set()
        self._last_lag_update = 0.0
        self._lag_labels: set[tuple[str, int]] = set()
        self._retry_attempt = 0
        self._joined = False
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._health = HealthServer(settings.http_host, settings.http_port, self._liveness, self._readiness)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def http_port(self) -> int:
        return self._health.port

    @property
    def assigned_partitions(self) -> int:
        """How many input partitions the group gave this instance (0 before it joined)."""
        return len(self._assignment)

    def stop(self) -> None:
        """Ask the loop to finish the batch in hand and shut down."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        def _on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info(
                "%s: received %s, finishing the current batch", self.service, signal.Signals(signum).name
            )
            self.stop()

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)

    def run(self) -> None:
        """Consume until :meth:`stop` (or a signal); always commits or rewinds before returning."""
        try:
            self._start()
            while not self._stop.is_set():
                messages = self._consumer_or_fail().consume(
                    num_messages=self.settings.max_batch_size,
                    timeout=self.settings.max_batch_wait_seconds,
                )
                self._heartbeat()
                self._run_batches(messages)
                self._update_lag()
        finally:
            self._close()

    def _start(self) -> None:
        kafka = self.settings.kafka
        self.handler.start()
        if self.settings.create_topics:
            topics = [self.settings.input_topic, self.settings.output_topic, self.settings.dead_letter_topic]
            ensure_topics(kafka.client_config(), [t for t in topics if t], self.settings.topic_partitions)
        self._producer = self._new_producer()
        self._consumer = Consumer(
            {
                **kafka.client_config(),
                "client.id": f"{self.service}-consumer",
                "group.id": self.settings.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": self.settings.session_timeout_ms,
                "heartbeat.interval.ms": max(100, self.settings.session_timeout_ms // 3),
                "max.poll.interval.ms": self.settings.max_poll_interval_ms,
                "error_cb": self._on_kafka_error,
            }
        )
        self._consumer.subscribe(
            [self.settings.input_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._health.start()
        self._running = True
        log.info(
            "%s: consuming %s as group %s, metrics and health on port %d",
            self.service,
            self.settings.input_topic,
            self.settings.group_id,
            self.http_port,
        )

    def _new_producer(self) -> Producer:
        kafka = self.settings.kafka
        return Producer(
            {
                **kafka.client_config(),
                "client.id": f"{self.service}-producer",
                "enable.idempotence": True,
                "acks": "all",
                "compression.type": kafka.compression_type,
                "linger.ms": 5,
                "message.timeout.ms": int(self.settings.delivery_timeout_seconds * 1000),
                # The same limit as the broker's (one setting): a record the broker would refuse is
                # refused here, synchronously, and dead-letters its input.
                "message.max.bytes": self.settings.max_message_bytes + RECORD_OVERHEAD_BYTES,
                "error_cb": self._on_kafka_error,
            }
        )

    def _replace_producer(self) -> None:
        """A fresh producer after a failed delivery. An idempotent producer's id and sequence
        numbers live on the broker: a broker that lost its state (restarted from memory, a
        cluster rebuilt) answers the old producer's records with errors until they time out,
        again and again, while a new producer (a new id) is accepted at once."""
        old, self._producer = self._producer, None
        if old is not None:
            try:
                old.purge()
                old.flush(0)
            except (KafkaException, SystemError) as error:
                # A producer in a fatal state may raise here too: it is dropped all the same.
                log.warning("%s: discarding the old producer: %s", self.service, error)
        self._producer = self._new_producer()
        metrics.PRODUCER_RESETS.labels(self.service).inc()

    def _close(self) -> None:
        self._running = False
        try:
            if self._consumer is not None:
                self._consumer.close()
            if self._producer is not None:
                self._producer.flush(self.settings.delivery_timeout_seconds)
        finally:
            # Drop the clients: librdkafka keeps reconnecting (and logging) until they are destroyed.
            self._consumer = None
            self._producer = None
            self._health.stop()
            self.handler.close()
        log.info("%s: stopped", self.service)

    def _consumer_or_fail(self) -> Consumer:
        if self._consumer is None:
            raise RuntimeError("runtime not started")
        return self._consumer

    # -- one batch ----------------------------------------------------------------------------

    def _run_batches(self, messages: list[Message]) -> None:
        """What one consume returned, in batches of at most ``max_batch_bytes``; after a batch
        that failed, the rest is put back (its partitions sought to their first offsets)."""
        records = [message for message in messages if not self._is_error(message)]
        batches = byte_bounded_batches(records, self.settings.max_batch_bytes)
        for position, batch in enumerate(batches):
            if not self._run_batch(batch):
                failed = {(m.topic() or "", m.partition() or 0) for m in batch}
                rest = [m for later in batches[position + 1 :] for m in later]
                self._seek_to_first([m for m in rest if (m.topic() or "", m.partition() or 0) not in failed])
                return

    def _run_batch(self, records: list[Message]) -> bool:
        """One batch processed, produced, confirmed and committed (True), or rewound (False)."""
        started = time.perf_counter()
        if not records:
            return True
        for message in records:
            metrics.MESSAGES_CONSUMED.labels(self.service, message.topic()).inc()
        try:
            result = self._process(records)
        except RetryableError as error:
            self._rewind(records, error)
            return False
        try:
            self._produce_and_confirm(result)
        except RetryableError as error:
            self._replace_producer()
            self._rewind(records, error)
            return False
        self._commit(records)
        metrics.BATCH_SIZE.labels(self.service).observe(len(records))
        metrics.BATCH_PROCESSING_SECONDS.labels(self.service).observe(time.perf_counter() - started)
        self._retry_attempt = 0
        return True

    def _process(self, records: list[Message]) -> BatchResult:
        result = BatchResult()
        decoded: list[Consumed[Any]] = []
        for message in records:
            try:
                decoded.append(Consumed(self._decode(message), message))
            except UnprocessableMessageError as rejection:
                result.rejected.append((Consumed(None, message), rejection))
        if self.handler.handles_tombstones:
            if decoded:
                result.extend(self._handle(decoded))
            return result
        run: list[Consumed[Any]] = []  # records between tombstones, handled together
        for item in decoded:
            if not isinstance(item.event, Tombstone):
                run.append(item)
                continue
            if run:
                result.extend(self._handle(run))
                run = []
            result.outputs.append(Output(None, key=item.event.key, source=item))
        if run:
            result.extend(self._handle(run))
        return result

    def _while_polling(self, work: Callable[[], ResultT]) -> ResultT:
        """Run ``work`` (the handler) on a helper thread while this thread keeps polling the
        consumer, its partitions paused, and beating the heartbeat: a batch that takes minutes (a
        slow model server) neither leaves the consumer group (``max.poll.interval.ms``) nor fails
        the liveness probe. Only a batch past ``max_batch_seconds`` does."""
        consumer = self._consumer_or_fail()
        finished = threading.Event()
        outcome: dict[str, Any] = {}

        def target() -> None:
            try:
                outcome["result"] = work()
            except BaseException as error:  # re-raised on the loop's thread
                outcome["error"] = error
            finally:
                finished.set()

        paused = consumer.assignment()
        consumer.pause(paused)
        self._batch_started = time.monotonic()
        helper = threading.Thread(target=target, name=f"{self.service}-batch", daemon=True)
        helper.start()
        try:
            while not finished.wait(BUSY_POLL_SECONDS):
                message = consumer.poll(0)  # serves the group protocol; the partitions are paused
                if message is not None and not self._is_error(message):
                    # A partition assigned during the batch is not paused: put the message back.
                    partition = TopicPartition(message.topic() or "", message.partition() or 0)
                    consumer.seek(TopicPartition(partition.topic, partition.partition, message.offset() or 0))
                    consumer.pause([partition])
                    paused.append(partition)
                self._heartbeat()
        finally:
            self._batch_started = None
            consumer.resume(consumer.assignment())
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]

    def _decode(self, message: Message) -> BaseModel | Tombstone:
        value = message.value()
        if value is None:
            metrics.TOMBSTONES.labels(self.service).inc()
            key = message.key()
            if not key:
                raise UnprocessableMessageError(
                    "TombstoneWithoutKey",
                    "a null value deletes its key's document, and this record has no key",
                )
            try:
                return Tombstone(key.decode("utf-8") if isinstance(key, bytes) else str(key))
            except UnicodeDecodeError:
                raise UnprocessableMessageError(
                    "TombstoneWithoutKey", "the tombstone's key is not UTF-8"
                ) from None
        if not value:
            raise UnprocessableMessageError("EmptyMessage", "message has no value")
        if len(value) > self.settings.max_message_bytes:
            raise UnprocessableMessageError(
                "MessageTooLarge",
                f"message of {len(value)} bytes exceeds the limit of {self.settings.max_message_bytes}",
            )
        try:
            return self.handler.input_model.model_validate_json(value)
        except ValidationError as error:
            version = self.handler.input_model.model_fields.get("schema_version")
            raise rejection_from_validation(error, version.default if version else None) from error

    def _handle(self, batch: list[Consumed[Any]]) -> BatchResult:
        """Run the handler; if it fails on a batch, isolate the message(s) that make it fail."""
        try:
            return self._while_polling(lambda: self.handler.handle(batch))
        except RetryableError:
            raise
        except Exception as error:
            if len(batch) == 1:
                if not isinstance(error, UnprocessableMessageError):
                    log.exception("%s: handler failed on one message; dead-lettering it", self.service)
                    error = UnprocessableMessageError(type(error).__name__, str(error))
                return BatchResult(rejected=[(batch[0], error)])
            log.warning(
                "%s: handler failed on a batch of %d (%r); retrying one by one",
                self.service,
                len(batch),
                error,
            )
        result = BatchResult()
        for item in batch:
            result.extend(self._handle([item]))
        return result

    def _produce_and_confirm(self, result: BatchResult) -> None:
        producer = self._producer
        assert producer is not None
        failures: list[KafkaError] = []
        confirmed: list[str] = []

        def on_delivery(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                failures.append(error)
            else:
                confirmed.append(message.topic() or "")

        limit = self.settings.max_message_bytes
        rejected = list(result.rejected)
        for output in result.outputs:
            value = None if output.value is None else output.value.model_dump_json().encode()
            if value is not None and len(value) > limit:
                rejected.append(self._output_too_large(output, len(value)))
                continue
            try:
                produce_when_room(producer, self._topic_of(output), output.key, value, on_delivery)
            except KafkaException as error:
                if error.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                    # A producer in a fatal state (an idempotent producer the broker no longer
                    # knows): rewind, and the runtime replaces the producer.
                    raise RetryableError(f"produce failed: {error.args[0].str()}") from error
                rejected.append(self._output_too_large(output, len(value or b"")))
        for item, rejection in rejected:
            letter, value = fitted_dead_letter(
                self.service, item.message, rejection, limit, self.settings.dead_letter_payload_max_bytes
            )
            log.warning(
                "%s: dead-lettered %s[%d]@%d: %s: %s",
                self.service,
                letter.origin.topic,
                letter.origin.partition,
                letter.origin.offset,
                rejection.error_class,
                rejection,
            )
            try:
                produce_when_room(
                    producer, self.settings.dead_letter_topic, letter.origin.key, value, on_delivery
                )
            except KafkaException as error:
                raise RetryableError(f"dead-letter produce failed: {error.args[0].str()}") from error
        try:
            undelivered = producer.flush(self.settings.delivery_timeout_seconds)
        except (KafkaException, SystemError) as error:
            # An idempotent producer turned fatal (a broker that lost its state saw its sequence
            # numbers out of order) raises from flush, the client's callbacks surfacing the fatal
            # error as a SystemError: the batch rewinds and the runtime replaces the producer.
            raise RetryableError(f"delivery failed: producer in a fatal state: {error}") from error
        for topic in confirmed:
            metrics.MESSAGES_PRODUCED.labels(self.service, topic).inc()
        if failures or undelivered:
            reason = failures[0].str() if failures else f"{undelivered} messages not confirmed in time"
            if any(failure.code() == KafkaError.MSG_SIZE_TOO_LARGE for failure in failures):
                reason += (
                    f" (the broker refused a record within max_message_bytes={limit}: set it to the "
                    "broker's message.max.bytes)"
                )
            raise RetryableError(f"delivery failed: {reason}")
        for _item, rejection in rejected:
            metrics.MESSAGES_DEAD_LETTERED.labels(self.service, rejection.error_class).inc()

    def _output_too_large(self, output: Output, size: int) -> tuple[Consumed[Any], UnprocessableMessageError]:
        """The input whose output the broker cannot take: dead-lettered, so its partition moves on."""
        if output.source is None:
            raise RuntimeError(
                f"{self.service}: an output of {size} bytes exceeds max_message_bytes "
                f"({self.settings.max_message_bytes}) and names no input to dead-letter"
            )
        rejection = UnprocessableMessageError(
            "OutputTooLarge",
            f"the {type(output.value).__name__} made from this message is {size} bytes, over the "
            f"message limit of {self.settings.max_message_bytes} (max_message_bytes)",
        )
        return output.source, rejection

    def _topic_of(self, output: Output) -> str:
        topic = output.topic or self.settings.output_topic
        if not topic:
            raise RuntimeError(f"{self.service}: an output has no topic and no output topic is set")
        return topic

    def _commit(self, records: list[Message]) -> None:
        next_offsets: dict[tuple[str, int], int] = {}
        for message in records:
            key = (message.topic() or "", message.partition() or 0)
            next_offsets[key] = max(next_offsets.get(key, 0), (message.offset() or 0) + 1)
        offsets = [
            TopicPartition(topic, partition, offset) for (topic, partition), offset in next_offsets.items()
        ]
        try:
            self._consumer_or_fail().commit(offsets=offsets, asynchronous=False)
        except KafkaException as error:
            # The outputs exist; the batch will be re-delivered and its duplicates are harmless.
            metrics.OFFSET_COMMITS.labels(self.service, "failed").inc()
            log.warning("%s: offset commit failed (%s); the batch may be re-delivered", self.service, error)
            return
        metrics.OFFSET_COMMITS.labels(self.service, "committed").inc()
        metrics.LAST_COMMIT_TIMESTAMP.labels(self.service).set_to_current_time()

    def _rewind(self, records: list[Message], error: RetryableError) -> None:
        """Seek every partition of the batch back to its first offset, then back off."""
        self._retry_attempt += 1
        metrics.BATCH_RETRIES.labels(self.service, type(error.__cause__ or error).__name__).inc()
        self._seek_to_first(records)
        delay = min(
            self.settings.retry_backoff_max_seconds,
            self.settings.retry_backoff_initial_seconds * 2 ** (self._retry_attempt - 1),
        )
        delay *= random.uniform(0.8, 1.2)
        log.warning(
            "%s: batch of %d failed (%s); retry %d in %.1fs, nothing committed",
            self.service,
            len(records),
            error,
            self._retry_attempt,
            delay,
        )
        self._stop.wait(delay)

    def _seek_to_first(self, records: list[Message]) -> None:
        """Each partition of ``records`` back to its first offset among them (still assigned ones)."""
        first_offsets: dict[tuple[str, int], int] = {}
        for message in records:
            key = (message.topic() or "", message.partition() or 0)
            first_offsets[key] = min(first_offsets.get(key, message.offset() or 0), message.offset() or 0)
        consumer = self._consumer_or_fail()
        for (topic, partition), offset in first_offsets.items():
            if (topic, partition) in self._assignment:
                consumer.seek(TopicPartition(topic, partition, offset))

    # -- Kafka callbacks and observability -------------------------------------------------

    def _is_error(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return False
        if error.code() != KafkaError._PARTITION_EOF:
            metrics.KAFKA_ERRORS.labels(self.service, error.name()).inc()
            log.warning("%s: consume error: %s", self.service, error)
            if error.fatal():
                raise KafkaException(error)
        return True

    def _on_kafka_error(self, error: KafkaError) -> None:
        metrics.KAFKA_ERRORS.labels(self.service, error.name()).inc()
        log.warning("%s: kafka: %s", self.service, error)

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._joined = True
        self._assignment |= {(tp.topic, tp.partition) for tp in partitions}
        log.info("%s: assigned %s", self.service, sorted(self._assignment))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._assignment.discard(key)
            if key in self._lag_labels:
                self._lag_labels.discard(key)
                metrics.CONSUMER_LAG.remove(self.service, tp.topic, str(tp.partition))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group forgot this member (a broker or coordinator lost its state, a session that
        expired): not ready until the group assigns partitions again."""
        self._joined = False
        log.warning("%s: lost %d partitions; rejoining the group", self.service, len(partitions))
        self._on_revoke(consumer, partitions)

    def _update_lag(self) -> None:
        """Lag from the watermarks the last fetch responses carried (no extra broker round trip)."""
        now = time.monotonic()
        if now - self._last_lag_update < 1.0 or not self._assignment:
            return
        self._last_lag_update = now
        consumer = self._consumer_or_fail()
        partitions = [TopicPartition(topic, partition) for topic, partition in self._assignment]
        for position in consumer.position(partitions):
            try:
                _low, high = consumer.get_watermark_offsets(position, cached=True)
            except KafkaException:
                continue
            if high is None or high < 0 or position.offset < 0:
                continue
            metrics.CONSUMER_LAG.labels(self.service, position.topic, str(position.partition)).set(
                max(0, high - position.offset)
            )
            self._lag_labels.add((position.topic, position.partition))

    def _heartbeat(self) -> None:
        self._last_heartbeat = time.monotonic()

    def _liveness(self) -> tuple[bool, dict[str, Any]]:
        now = time.monotonic()
        silent = now - self._last_heartbeat
        started = self._batch_started
        busy = now - started if started is not None else 0.0
        alive = not self._running or (
            silent < self.settings.liveness_timeout_seconds and busy < self.settings.max_batch_seconds
        )
        return alive, {
            "service": self.service,
            "seconds_since_poll": round(silent, 3),
            "seconds_in_batch": round(busy, 3),
        }

    def _readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready once the group has given this member its share (possibly none: a standby
        replica), until the member is lost or the service stops. A batch failing over and over
        (a sick dependency) shows in ``failing_batches``, not here: every replica would fail alike."""
        ready = self._running and not self._stop.is_set() and self._joined
        return ready, {
            "service": self.service,
            "group_joined": self._joined,
            "assigned_partitions": len(self._assignment),
            "failing_batches": self._retry_attempt,
        }
