"""Peak memory of the proposer's ONNX graph on the worst documents its limits admit.

Each case runs in a fresh process (peak RSS is per process): the graph loaded, one synthetic
document featurized and scored, ``ru_maxrss`` read. The cases are the corners of the limits: the
most entities, the longest text, and the most pairs times tokens the budget allows.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lmrc.contracts import DocumentEvent, Entity, Mention

SENTENCE_WORDS = 20


@dataclass(frozen=True)
class MemoryCase:
    name: str
    entities: int
    mentions_per_entity: int
    words: int


def _vocabulary() -> list[str]:
    """Real words (the holdout split's), so that text splits into word pieces as text does."""
    from lmrc import docred

    return [word for raw in docred.load_split("holdout") for sentence in raw["sents"] for word in sentence]


def synthetic_document(case: MemoryCase, vocabulary: list[str] | None = None) -> DocumentEvent:
    """``words`` words in sentences of 20; each entity's mentions spread evenly over the text."""
    vocabulary = vocabulary or _vocabulary()
    words = [vocabulary[index % len(vocabulary)] for index in range(case.words)]
    sentences = [words[i : i + SENTENCE_WORDS] for i in range(0, len(words), SENTENCE_WORDS)]
    slots = [(s, k) for s, sentence in enumerate(sentences) for k in range(0, len(sentence) - 1, 2)]
    total = case.entities * case.mentions_per_entity
    if total > len(slots):
        raise ValueError(f"{case.name}: {total} mentions do not fit {case.words} words")
    step = len(slots) / total
    entities = []
    for entity in range(case.entities):
        mentions = []
        for mention in range(case.mentions_per_entity):
            sent_id, start = slots[int((mention * case.entities + entity) * step)]
            mentions.append(
                Mention(sent_id=sent_id, start=start, end=start + 1, name=f"e{entity}", type="MISC")
            )
        entities.append(Entity(mentions=mentions))
    return DocumentEvent(doc_id=case.name, sentences=sentences, entities=entities)


_CHILD = """
import json, resource, sys, time
from lmrc.contracts import DocumentEvent
from lmrc.proposer.artifact import featurizer_for, load_config
from lmrc.proposer.inference import OnnxPairScorer
artifact, onnx, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
document = DocumentEvent.model_validate_json(sys.stdin.read())
config = load_config(artifact)
scorer = OnnxPairScorer(
    onnx, ["CPUExecutionProvider"], threads=threads, pair_width=config.pair_width
)
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
featurizer = featurizer_for(config)
features = featurizer.featurize(document)
started = time.perf_counter()
scorer.score_with_relations(features, config.relation_loss)
print(json.dumps({"tokens": features.token_count, "pairs": len(features.pair_heads),
    "seconds": round(time.perf_counter() - started, 2), "model_loaded_mib": round(loaded / 1024),
    "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def largest_admitted(
    entities: int, mentions_per_entity: int, max_tokens: int, name: str, vocabulary: list[str], encoder: str
) -> MemoryCase:
    """The case with the most words whose word pieces (markers included) stay within ``max_tokens``."""
    from lmrc.proposer.artifact import tokenizer_file
    from lmrc.proposer.features import DocumentFeaturizer

    featurizer = DocumentFeaturizer(tokenizer_file(encoder))
    low, high = 2 * entities * mentions_per_entity, max_tokens
    while low < high:
        middle = (low + high + 1) // 2
        case = MemoryCase(name, entities, mentions_per_entity, middle)
        pieces = len(featurizer.word_pieces(synthetic_document(case, vocabulary))[0])
        low, high = (middle, high) if pieces <= max_tokens else (low, middle - 1)
    return MemoryCase(name, entities, mentions_per_entity, low)


def worst_cases(max_tokens: int, max_entities: int, max_mention_slots: int, encoder: str) -> list[MemoryCase]:
    """The corners of the proposer's limits, each as long as the token limit allows."""
    vocabulary = _vocabulary()
    most_mentioned = max(1, max_mention_slots // 64)
    return [
        largest_admitted(
            64, most_mentioned, max_tokens, "longest text, most mention slots", vocabulary, encoder
        ),
        largest_admitted(
            max_entities, 1, max_tokens // 4, "most entities, quarter-length text", vocabulary, encoder
        ),
    ]


def measure(case: MemoryCase, artifact: Path, onnx: Path, threads: int = 2) -> dict[str, object]:
    document = synthetic_document(case)
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-c", _CHILD, str(artifact), str(onnx), str(threads)],
        input=document.model_dump_json(),
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        return {**asdict(case), "error": run.stderr.strip().splitlines()[-1:], "wall_seconds": 0}
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    return {**asdict(case), **figures, "wall_seconds": round(time.monotonic() - started, 1)}
