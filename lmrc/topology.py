"""The pipeline's topics and which stage reads and writes which: the one place that names them.

Every service's settings take their defaults from here, as do ``lmrc topics``, the local run, the
benchmark, the tests and the chart test (which checks the Helm values against this module).
Operators rename topics per deployment through each service's ``*_INPUT_TOPIC`` /
``*_OUTPUT_TOPIC`` / ``*_DEAD_LETTER_TOPIC`` variables; a ``TopicNames`` with another prefix
gives a whole set at once (tests run each case on its own set).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "lmrc"
DEAD_LETTER_SUFFIX = ".dead-letter"


def dead_letter_topic(topic: str) -> str:
    """Where a stage puts the messages of ``topic`` it cannot process."""
    return f"{topic}{DEAD_LETTER_SUFFIX}"


@dataclass(frozen=True)
class Stage:
    """A service of the pipeline: the topic it consumes and the one it produces (None: the end)."""

    name: str
    input: str
    output: str | None

    @property
    def dead_letter(self) -> str:
        return dead_letter_topic(self.input)

    @property
    def group_id(self) -> str:
        return f"{DEFAULT_PREFIX}-{self.name}"


@dataclass(frozen=True)
class TopicNames:
    """One pipeline's topics, all under ``prefix``."""

    prefix: str = DEFAULT_PREFIX

    @property
    def texts(self) -> str:
        """Users publish plain-text TextDocumentEvents here; the annotator reads them."""
        return f"{self.prefix}.texts"

    @property
    def documents(self) -> str:
        """Users publish annotated DocumentEvents here, and the annotator its annotated texts."""
        return f"{self.prefix}.documents"

    @property
    def candidates(self) -> str:
        """The proposer's CandidateSetEvents, one per document."""
        return f"{self.prefix}.candidates"

    @property
    def relations(self) -> str:
        """RelationSetEvents, one per document: users subscribe here; the sink writes them."""
        return f"{self.prefix}.relations"

    @property
    def raw_documents(self) -> str:
        """The relay's input (documents from elsewhere, validated before they enter the pipeline)."""
        return f"{self.documents}.raw"

    @property
    def stages(self) -> tuple[Stage, ...]:
        """The services in pipeline order."""
        return (
            Stage("annotator", self.texts, self.documents),
            Stage("proposer", self.documents, self.candidates),
            Stage("classifier", self.candidates, self.relations),
            Stage("sink", self.relations, None),
        )

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"no stage {name!r}; stages: {[s.name for s in self.stages]}")

    @property
    def all(self) -> list[str]:
        """Every topic the pipeline uses: data topics first, then their dead-letter topics."""
        data = [self.texts, self.documents, self.candidates, self.relations]
        return data + [dead_letter_topic(topic) for topic in data]


TOPICS = TopicNames()
