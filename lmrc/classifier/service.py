"""The classifier service: CandidateSetEvents in, one RelationSetEvent per document out.

The LLM chooses from each pair's shortlist (prompt v2): the proposer's top relations are shown as
lettered options with the encoder's probabilities, and the grammar admits only subsets of those
letters, or ``none``. A document's candidate pairs are sent to TGI concurrently, side by side, so
that TGI's prefix cache serves their shared document prefix. Per pair:
- an answer with letters: one Relation per chosen option in the document's set (confidence from
  the letter's token log-probability); ``none``: nothing (counted);
- a pair without a shortlist (a proposer without a relation head) cannot be asked: it is listed
  in ``failed_pairs`` (``NoShortlist``);
- TGI refused the request as too long or invalid (422, 413): it is asked again with the document
  narrowed to the pair's window (the sentences that mention the head or tail, and the pair's
  evidence); refused again, or an unparseable answer: the pair is listed in the set's
  ``failed_pairs`` with the reason (counted), the rest of the document goes on;
- TGI failed in a way that may pass (5xx, 424, 429, timeouts, connection errors), after the
  client's retries, or the circuit breaker is open: the whole batch is rewound and retried later
  by the runtime, nothing committed. A flaky server delays a document, never costs it a relation;
- TGI keeps failing one pair's request (5xx, 424, a timeout) while it answers a probe (a one-token
  request) at once: the server is well and this request is what breaks it. The batch is rewound as
  above, and after ``poison_request_rewinds`` such rewinds in a row the pair is listed in
  ``failed_pairs`` (``PoisonRequest``, counted) so that its partition moves on; before, a request
  that crashed TGI every time stalled its partition for good;
- every pair of a document refused by TGI even in its window: the document is dead-lettered with
  the reason (a limit mismatch between the stages), never committed as a silent empty result.
Every other document gets its RelationSetEvent, also with no pairs or no relations: it is the
record that the document went through.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import OrderedDict
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from lmrc.bundle import load_bundle, schema_of_model
from lmrc.classifier import metrics
from lmrc.classifier.artifact import DEFAULT_ADAPTER_DIR, ClassifierConfig, Decision, load_config
from lmrc.classifier.prompt import (
    OPTION_LETTERS,
    PROMPT_VERSION,
    SEPARATOR,
    TERMINATOR,
    LabelSet,
    Option,
    UnparseableAnswerError,
    answer_regex,
    build_prompt,
    docred_labels,
    pair_window,
    parse_answer,
    schema_labels,
)
from lmrc.classifier.tgi_client import (
    CircuitBreaker,
    CircuitOpenError,
    RetryPolicy,
    TgiClient,
    TgiError,
    TgiMisconfiguredError,
    TgiRejectedError,
    redact_url,
    split_credentials,
)
from lmrc.contracts import (
    CandidatePair,
    CandidateSetEvent,
    EntityRef,
    FailedPair,
    ModelVersions,
    Relation,
    RelationSetEvent,
    event_id,
)
from lmrc.contracts.schema import Schema
from lmrc.contracts.tgi import GenerateParameters, GenerateRequest, GenerateResponse, Grammar
from lmrc.runtime import (
    BatchResult,
    Consumed,
    Handler,
    Output,
    RetryableError,
    ServiceRuntime,
    ServiceSettings,
    UnprocessableMessageError,
)
from lmrc.runtime.settings import SECRETS_DIR, load_settings
from lmrc.topology import TOPICS

log = logging.getLogger(__name__)

T = TypeVar("T")

# Pairs whose requests are being counted as possible poison at once; a pair only stays here between
# its first failure and its success or its last rewind, so a few in flight per partition is the norm.
MAX_STRUCK_PAIRS = 1024


class ClassifierSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CLASSIFIER_", extra="ignore", secrets_dir=SECRETS_DIR)

    service_name: str = "classifier"
    group_id: str = TOPICS.stage("classifier").group_id
    input_topic: str = TOPICS.stage("classifier").input
    output_topic: str | None = TOPICS.stage("classifier").output
    dead_letter_topic: str = TOPICS.stage("classifier").dead_letter
    max_batch_size: int = Field(
        default=1,
        ge=1,
        le=10_000,
        description="Documents per batch: a document's pairs already fill the model server's batch.",
    )
    artifact_dir: Path = Field(default=DEFAULT_ADAPTER_DIR, description="Adapter dir with classifier.json.")
    models: Path | None = Field(
        default=None,
        description="A model bundle (lmrc train): relation names and ids from its schema, and its "
        "adapter when it has one (else artifact_dir's, which reads any schema's shortlist).",
    )
    tgi_url: str = "http://127.0.0.1:8080"
    tgi_api_token: SecretStr | None = None
    tgi_adapter_id: str | None = Field(
        default=None, description="LoRA adapter id TGI serves the classifier as (None: TGI's base model)."
    )
    tgi_timeout_seconds: float = Field(default=60.0, gt=0)
    tgi_max_concurrency: int = Field(default=32, ge=1, le=1024)
    tgi_max_attempts: int = Field(default=4, ge=1)
    tgi_backoff_initial_seconds: float = Field(default=0.5, gt=0)
    tgi_backoff_max_seconds: float = Field(default=8.0, gt=0)
    circuit_failure_threshold: int = Field(default=20, ge=1, description="Consecutive failures.")
    circuit_reset_seconds: float = Field(default=15.0, gt=0)
    poison_request_rewinds: int = Field(
        default=3,
        ge=1,
        description="Rewinds one pair's failing request may cause while the model server answers a "
        "probe; then the pair is failed (PoisonRequest) and the partition moves on.",
    )
    max_new_tokens: int = Field(default=32, ge=4)
    duplicate_cache_size: int = Field(
        default=1024,
        ge=0,
        description="Documents whose relations are remembered (by content and models), so that a "
        "republished document costs no LLM call; 0: none.",
    )
    decision: Literal["tuned", "llm"] = Field(
        default="tuned",
        description="tuned: the adapter's validation-tuned combination of the LLM's answer and the "
        "encoder's probabilities (classifier.json); llm: the LLM's answer alone.",
    )
    max_options: int | None = Field(
        default=None,
        ge=1,
        le=len(OPTION_LETTERS),
        description="Shortlist entries shown per pair (None: as many as the adapter was trained with).",
    )

    @model_validator(mode="after")
    def _from_bundle(self) -> ClassifierSettings:
        if self.models is not None:
            adapter = load_bundle(self.models).model_dir("classifier")
            if adapter is not None:
                self.artifact_dir = adapter
        return self

    def schema(self) -> Schema:
        """The relations the classifier names: the bundle's schema, else its adapter's."""
        return (
            load_bundle(self.models).schema if self.models is not None else schema_of_model(self.artifact_dir)
        )

    @model_validator(mode="after")
    def _one_credential(self) -> ClassifierSettings:
        """A password in the URL goes as Basic auth, the token as Bearer: both are the one
        Authorization header, so one would silently never reach TGI."""
        if self.tgi_api_token is not None and split_credentials(self.tgi_url)[1] is not None:
            raise ValueError(
                "tgi_url carries credentials and tgi_api_token is set: both would be the one "
                "Authorization header; give one of them"
            )
        return self

    @model_validator(mode="after")
    def _pair_fits_a_batch(self) -> ClassifierSettings:
        """A pair's worst case (every attempt timing out, the longest backoff between) must end
        well inside a batch's liveness bound, or a slow but healthy server would look stuck."""
        worst = self.tgi_max_attempts * (self.tgi_timeout_seconds + self.tgi_backoff_max_seconds)
        if worst * 2 > self.max_batch_seconds:
            raise ValueError(
                f"tgi_max_attempts x (tgi_timeout_seconds + tgi_backoff_max_seconds) = {worst:.0f} s "
                f"must be at most half of max_batch_seconds ({self.max_batch_seconds:.0f} s)"
            )
        return self


def label_confidences(response: GenerateResponse, names: list[str]) -> dict[str, float]:
    """Per answer part (an option letter): exp(sum of the log-probabilities of the tokens that
    spell it). Without token details (a server that omits them), every part gets 1.0.
    """
    details = response.details
    if (
        details is None
        or not details.tokens
        or any(t.logprob is None for t in details.tokens if not t.special)
    ):
        return dict.fromkeys(names, 1.0)
    spans: list[tuple[int, int, float]] = []
    position = 0
    for token in details.tokens:
        if token.special:
            continue
        spans.append((position, position + len(token.text), token.logprob or 0.0))
        position += len(token.text)
    text = "".join(t.text for t in details.tokens if not t.special)
    where: dict[str, tuple[int, int]] = {}  # each name's span in the answer, part by part
    offset = 0
    for part in text.rstrip(TERMINATOR).split(SEPARATOR):
        where.setdefault(part, (offset, offset + len(part)))
        offset += len(part) + len(SEPARATOR)
    confidences: dict[str, float] = {}
    for name in names:
        if name not in where:
            confidences[name] = 1.0
            continue
        start, end = where[name]
        logprob = sum(lp for s, e, lp in spans if s < end and e > start)
        confidences[name] = min(1.0, max(0.0, math.exp(logprob)))
    return confidences


class ClassifierHandler(Handler[CandidateSetEvent]):
    input_model = CandidateSetEvent

    def __init__(
        self, settings: ClassifierSettings, config: ClassifierConfig, labels: LabelSet | None = None
    ) -> None:
        if config.prompt_version != PROMPT_VERSION:
            raise ValueError(
                f"adapter {config.version} was trained on prompt {config.prompt_version}, "
                f"this service builds {PROMPT_VERSION}"
            )
        self.settings = settings
        self.config = config
        self.style = config.prompt_style()
        self.labels = labels or docred_labels()
        self.known_relations = set(self.labels.names)
        self.service = settings.service_name
        metrics.initialize_pairs(self.service)
        trained_options = int(config.training.get("shortlist_size", len(OPTION_LETTERS)))
        self.max_options = settings.max_options or trained_options
        self.decision = config.decision if settings.decision == "tuned" else Decision()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_flight = asyncio.Semaphore(settings.tgi_max_concurrency)
        # candidate set id (document content + proposer) -> its relations, most recent last
        self._answered: OrderedDict[str, list[Relation]] = OrderedDict()
        # (candidate set id, head, tail) -> rewinds its request caused while the server was well
        self._strikes: OrderedDict[tuple[str, int, int], int] = OrderedDict()
        metrics.DUPLICATES.labels(self.service)
        self.client = TgiClient(
            settings.tgi_url,
            self.service,
            timeout_seconds=settings.tgi_timeout_seconds,
            max_concurrency=settings.tgi_max_concurrency,
            retry=RetryPolicy(
                settings.tgi_max_attempts,
                settings.tgi_backoff_initial_seconds,
                settings.tgi_backoff_max_seconds,
            ),
            breaker=CircuitBreaker(
                settings.circuit_failure_threshold, settings.circuit_reset_seconds, self.service
            ),
            api_token=settings.tgi_api_token.get_secret_value() if settings.tgi_api_token else None,
        )

    def start(self) -> None:
        """An event loop of the handler's own, with the HTTP client open on it."""
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self.client.open())

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the handler's event loop (where its HTTP client lives)."""
        if self._loop is None:
            raise RuntimeError("classifier handler not started")
        return self._loop.run_until_complete(coroutine)

    def close(self) -> None:
        if self._loop is None:
            return
        self._loop.run_until_complete(self.client.close())
        self._loop.close()
        self._loop = None

    def options_for(self, pair: CandidatePair) -> list[Option]:
        """The pair's shortlist as the LLM sees it: best first, at most ``max_options``."""
        return [
            Option(scored.relation_id, scored.probability)
            for scored in pair.shortlist[: self.max_options]
            if scored.relation_id in self.labels.names
        ]

    def request_for(
        self,
        candidates: CandidateSetEvent,
        pair: CandidatePair,
        options: list[Option],
        sentence_ids: set[int] | None = None,
    ) -> GenerateRequest:
        """The pair's request; ``sentence_ids`` narrows the document to those sentences."""
        return GenerateRequest(
            inputs=build_prompt(
                candidates.document,
                pair.head,
                pair.tail,
                options,
                self.labels,
                sentence_ids,
                self.style,
            ),
            parameters=GenerateParameters(
                adapter_id=self.settings.tgi_adapter_id,
                details=True,
                do_sample=False,
                grammar=Grammar(type="regex", value=answer_regex(len(options))),
                max_new_tokens=self.settings.max_new_tokens,
            ),
        )

    def schema_problem(self, candidates: CandidateSetEvent) -> str | None:
        """Why a candidate set cannot be classified in this service's schema, if it cannot."""
        named = {scored.relation_id for pair in candidates.pairs for scored in pair.shortlist}
        unknown = sorted(named - self.known_relations)
        if not unknown:
            return None
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        return (
            f"candidates of {candidates.doc_id!r} name relations {shown} that the classifier's schema "
            f"lacks (proposer {candidates.proposer_model_version}; it knows {len(self.known_relations)})"
        )

    def handle(self, batch: Sequence[Consumed[CandidateSetEvent]]) -> BatchResult:
        result = BatchResult()
        usable = []
        for item in batch:
            problem = self.schema_problem(item.event)
            if problem is None:
                usable.append(item)
            else:
                result.rejected.append((item, UnprocessableMessageError("SchemaMismatch", problem)))
        batch = usable
        remembered = [self._remembered(item.event) for item in batch]
        fresh = [item.event for item, known in zip(batch, remembered, strict=True) if known is None]
        outcomes = iter(self.run(self._classify_all(fresh)))
        for item, known in zip(batch, remembered, strict=True):
            candidates = item.event
            if known is not None:  # the same document again: the same answer, no LLM call
                metrics.DUPLICATES.labels(self.service).inc()
                result.outputs.append(
                    Output(self.relation_set(candidates, known, []), key=candidates.doc_id, source=item)
                )
                continue
            relations: list[Relation] = []
            failed: list[FailedPair] = []
            answers = next(outcomes)
            rejected = [a for a in answers if isinstance(a, UnprocessableMessageError)]
            if (
                answers
                and len(rejected) == len(answers)
                and all(r.error_class == TgiRejectedError.error_class for r in rejected)
            ):
                # Not one pair fits what the server takes: a limit mismatch, not an empty document.
                metrics.PAIRS.labels(self.service, "failed").inc(len(answers))
                result.rejected.append(
                    (
                        item,
                        UnprocessableMessageError(
                            "AllPairsRejected",
                            f"the model server refused all {len(answers)} pairs, also narrowed to their "
                            f"windows (check TGI's --max-input-tokens against the documents the proposer "
                            f"admits): {rejected[0]}",
                        ),
                    )
                )
                continue
            for pair, outcome in zip(candidates.pairs, answers, strict=True):
                if isinstance(outcome, CircuitOpenError):
                    raise RetryableError(str(outcome)) from outcome
                if isinstance(outcome, UnprocessableMessageError):
                    metrics.PAIRS.labels(self.service, "failed").inc()
                    log.warning(
                        "%s: pair (%d, %d) of %r failed: %s: %s",
                        self.service,
                        pair.head,
                        pair.tail,
                        candidates.doc_id,
                        outcome.error_class,
                        outcome,
                    )
                    failed.append(
                        FailedPair(
                            head=pair.head,
                            tail=pair.tail,
                            error_class=outcome.error_class,
                            error_message=str(outcome)[:4096],
                        )
                    )
                    continue
                metrics.RELATIONS_PER_PAIR.labels(self.service).observe(len(outcome))
                metrics.PAIRS.labels(self.service, "related" if outcome else "unrelated").inc()
                metrics.RELATIONS.labels(self.service).inc(len(outcome))
                relations.extend(outcome)
            if not failed:  # a failed pair may succeed next time: only complete answers are kept
                self._remember(candidates, relations)
            result.outputs.append(
                Output(self.relation_set(candidates, relations, failed), key=candidates.doc_id, source=item)
            )
        return result

    def _remembered(self, candidates: CandidateSetEvent) -> list[Relation] | None:
        return self._answered.get(candidates.event_id)

    def _remember(self, candidates: CandidateSetEvent, relations: list[Relation]) -> None:
        """Bounded: the least recently answered document is forgotten first."""
        if self.settings.duplicate_cache_size == 0:
            return
        self._answered[candidates.event_id] = relations
        self._answered.move_to_end(candidates.event_id)
        while len(self._answered) > self.settings.duplicate_cache_size:
            self._answered.popitem(last=False)

    async def _classify_all(
        self, batch: list[CandidateSetEvent]
    ) -> list[list[list[Relation] | UnprocessableMessageError | CircuitOpenError]]:
        """Every pair of every document at once; at most ``tgi_max_concurrency`` of them hold a
        prompt (each the whole document's text) at a time, so memory does not grow with pairs."""
        self._in_flight = asyncio.Semaphore(self.settings.tgi_max_concurrency)
        flat = await asyncio.gather(
            *(self.classify(candidates, pair) for candidates in batch for pair in candidates.pairs)
        )
        outcomes, position = [], 0
        for candidates in batch:
            outcomes.append(list(flat[position : position + len(candidates.pairs)]))
            position += len(candidates.pairs)
        return outcomes

    async def classify(
        self, candidates: CandidateSetEvent, pair: CandidatePair
    ) -> list[Relation] | UnprocessableMessageError | CircuitOpenError:
        """The pair's relations, or why there are none to give (never raises for TGI trouble)."""
        options = self.options_for(pair)
        if not options:
            return UnprocessableMessageError(
                "NoShortlist",
                "the pair has no relation shortlist to choose from (a proposer with a relation head "
                "is needed)",
            )
        try:
            async with self._in_flight:
                try:
                    response = await self.client.generate(self.request_for(candidates, pair, options))
                except TgiRejectedError:
                    # Too long (or otherwise refused) as a whole: the pair's own sentences may fit.
                    window = pair_window(candidates.document, pair.head, pair.tail, pair.evidence)
                    metrics.WINDOWED_PAIRS.labels(self.service).inc()
                    response = await self.client.generate(self.request_for(candidates, pair, options, window))
            chosen = parse_answer(response.generated_text, len(options))
        except CircuitOpenError as error:
            return error
        except TgiMisconfiguredError as error:
            # Every request would fail alike: the server, not this pair. Pause (the circuit counts it).
            return CircuitOpenError(f"model server refuses requests: {error}")
        except TgiError as error:
            if error.retryable:
                # Still failing after the client's retries (5xx, 424, 429, timeouts, refused
                # connections): the server is in trouble, not this pair, unless it answers a probe
                # at once. Rewind the batch and try again later; failing the pair would lose its
                # relations for good.
                if await self._server_answers_probe():
                    return self._strike(candidates, pair, error)
                return CircuitOpenError(f"model server failing: {error}")
            return UnprocessableMessageError(error.error_class, str(error))
        except UnparseableAnswerError as error:
            return UnprocessableMessageError("UnparseableAnswer", str(error))
        self._strikes.pop((candidates.event_id, pair.head, pair.tail), None)
        confidences = label_confidences(response, [OPTION_LETTERS[index] for index in chosen])
        return self.relations(
            candidates,
            pair,
            [
                # An option the encoder alone keeps carries the encoder's probability.
                (option.relation_id, confidences.get(OPTION_LETTERS[index], option.probability))
                for index, option in enumerate(options)
                if self.decision.keep(index in chosen, option.probability)
            ],
        )

    async def _server_answers_probe(self) -> bool:
        """Whether the model server answers a one-token request (the same adapter, no grammar)."""
        probe = GenerateRequest(
            inputs="ping",
            parameters=GenerateParameters(adapter_id=self.settings.tgi_adapter_id, max_new_tokens=1),
        )
        try:
            await self.client.generate(probe)
        except TgiError:
            return False
        return True

    def _strike(
        self, candidates: CandidateSetEvent, pair: CandidatePair, error: TgiError
    ) -> CircuitOpenError | UnprocessableMessageError:
        """One more rewind for a request the server fails while it answers others; the last one
        fails the pair instead (its partition would wait for good)."""
        key = (candidates.event_id, pair.head, pair.tail)
        strikes = self._strikes.pop(key, 0) + 1
        limit = self.settings.poison_request_rewinds
        if strikes > limit:
            return UnprocessableMessageError(
                "PoisonRequest",
                f"the model server failed this pair's request after {limit} rewinds while answering "
                f"a probe each time: {error}",
            )
        self._strikes[key] = strikes
        while len(self._strikes) > MAX_STRUCK_PAIRS:
            self._strikes.popitem(last=False)
        return CircuitOpenError(f"model server failing this pair's request ({strikes} of {limit}): {error}")

    def models(self, candidates: CandidateSetEvent) -> ModelVersions:
        return ModelVersions(proposer=candidates.proposer_model_version, classifier=self.config.version)

    def relations(
        self, candidates: CandidateSetEvent, pair: CandidatePair, chosen: list[tuple[str, float]]
    ) -> list[Relation]:
        """Relations for the chosen (P-id, confidence) options of a pair."""
        document = candidates.document

        def ref(index: int) -> EntityRef:
            entity = document.entities[index]
            return EntityRef(index=index, name=entity.name, type=entity.type)

        return [
            Relation(
                # The candidate set's id carries the document's content and the proposer.
                event_id=event_id(candidates.event_id, pair.head, pair.tail, relation_id),
                doc_id=candidates.doc_id,
                doc_title=document.title,
                head=ref(pair.head),
                tail=ref(pair.tail),
                relation_id=relation_id,
                relation_name=self.labels.names[relation_id],
                confidence=confidence,
                evidence=pair.evidence,
                evidence_text=document.sentence_texts(pair.evidence),
                models=self.models(candidates),
                source=document.source,
                proposed_at=candidates.proposed_at,
            )
            for relation_id, confidence in chosen
        ]

    def relation_set(
        self, candidates: CandidateSetEvent, relations: list[Relation], failed: list[FailedPair]
    ) -> RelationSetEvent:
        """The document's record: its relations, possibly none."""
        metrics.DOCUMENTS.labels(self.service).inc()
        document = candidates.document
        return RelationSetEvent(
            event_id=event_id(candidates.event_id, self.config.version),
            doc_id=candidates.doc_id,
            version=document.version,
            content_hash=document.content_hash(),
            doc_title=document.title,
            relations=relations,
            entities=[
                EntityRef(index=index, name=entity.name, type=entity.type)
                for index, entity in enumerate(document.entities)
            ],
            candidate_pairs=len(candidates.pairs),
            failed_pairs=failed,
            models=self.models(candidates),
            source=candidates.document.source,
            proposed_at=candidates.proposed_at,
        )


def build_runtime(settings: ClassifierSettings) -> ServiceRuntime:
    config = load_config(settings.artifact_dir)
    handler = ClassifierHandler(settings, config, schema_labels(settings.schema()))
    log.info(
        "classifier %s (prompt %s) on %s, adapter %s",
        config.version,
        config.prompt_version,
        redact_url(settings.tgi_url),
        settings.tgi_adapter_id,
    )
    return ServiceRuntime(settings, handler)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    runtime = build_runtime(load_settings(ClassifierSettings))
    runtime.install_signal_handlers()
    runtime.run()
