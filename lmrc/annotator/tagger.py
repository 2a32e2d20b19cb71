"""The trained mention tagger: word-level BIO tags over the encoder's word pieces, read in
character offsets of the original text.

The text goes through the encoder's own tokenizer (offsets kept); a "word" is what its
pre-tokenizer splits (whitespace and punctuation), tagged by its first word piece. A document
longer than the window is cut into overlapping windows whose logits are averaged where they
overlap. Serving needs the tokenizer and onnxruntime only; training and export live in
``training/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field
from tokenizers import Tokenizer

from lmrc.paths import DEFAULT_ENCODER, ENCODER_PACKAGE, REPO_ROOT

#: DocRED's six entity types, in the tag order: the default schema's.
ENTITY_TYPES = ("PER", "ORG", "LOC", "TIME", "NUM", "MISC")


def tags_for(entity_types: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The BIO tag set of a schema's entity types: O, then B- and I- of each type in order."""
    return ("O", *tuple(f"{prefix}-{kind}" for kind in entity_types for prefix in ("B", "I")))


TAGS: tuple[str, ...] = tags_for(ENTITY_TYPES)
DEFAULT_TAGGER_DIR = REPO_ROOT / "models" / "annotator"
CONFIG_FILE = "tagger.json"
WEIGHTS_FILE = "tagger.safetensors"
INPUT_NAMES = ("input_ids", "attention_mask")
#: Windows the encoder reads in one run: the annotator's memory stays flat whatever the text's
#: length (a 100,000-character text took 5.7 GB in one run of its ~100 windows).
WINDOWS_PER_RUN = 4


class TaggerConfig(BaseModel):
    version: str
    encoder: str = Field(
        default=DEFAULT_ENCODER,
        description="The pretrained encoder under the tag layer (all-MiniLM-L6-v2, all-mpnet-base-v2 "
        "or a Hugging Face encoder folder); its tokenizer reads the text when serving.",
    )
    encoder_package: str = ENCODER_PACKAGE
    encoder_package_version: str
    tags: list[str] = Field(default_factory=lambda: list(TAGS))
    window_length: int = 512
    window_stride: int = 256
    outside_bias: float = Field(
        default=0.0,
        description="Added to the O tag's log-probability before decoding: above 0 trades recall for "
        "precision (chosen on validation by `lmrc annotator calibrate`).",
    )
    weights_format: Literal["fp16", "int4-delta"] = Field(
        default="fp16",
        description="How the trained parameters are stored: fp16, or int4 deltas from the pretrained "
        "encoder (the tag layer int8) for base-size encoders (`lmrc annotator compress`).",
    )
    validation: dict[str, float] = Field(default_factory=dict)
    training: dict[str, object] = Field(default_factory=dict)


def load_tagger_config(directory: str | Path = DEFAULT_TAGGER_DIR) -> TaggerConfig:
    return TaggerConfig.model_validate_json((Path(directory) / CONFIG_FILE).read_text(encoding="utf-8"))


def save_tagger_config(config: TaggerConfig, directory: str | Path) -> None:
    path = Path(directory) / CONFIG_FILE
    path.write_text(json.dumps(config.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")


def tagger_onnx_path(directory: str | Path, config: TaggerConfig) -> Path:
    """Where the ONNX export of a tagger lives (beside it, ignored by git)."""
    return Path(directory) / f"{config.version}.onnx"


@dataclass(frozen=True)
class MentionSpan:
    """A mention found in a text: characters ``[start, end)`` and a DocRED type."""

    start: int
    end: int
    type: str


@dataclass(frozen=True)
class TextPieces:
    """A text as word pieces: ids, each piece's word, and each word's characters and first piece."""

    ids: list[int]
    piece_words: list[int | None]
    word_spans: list[tuple[int, int]]
    first_pieces: list[int]


class TaggerFeaturizer:
    """Text -> word pieces -> windows framed by [CLS] ... [SEP]."""

    def __init__(self, tokenizer_file: str | Path, window_length: int = 512, window_stride: int = 256):
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.cls_id = self.tokenizer.token_to_id("[CLS]")
        self.sep_id = self.tokenizer.token_to_id("[SEP]")
        self.window_length = window_length
        self.window_stride = window_stride

    def pieces(self, text: str) -> TextPieces:
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        word_spans: list[tuple[int, int]] = []
        first_pieces: list[int] = []
        piece_words: list[int | None] = []
        index_of: dict[int, int] = {}
        for piece, (word, (start, end)) in enumerate(zip(encoding.word_ids, encoding.offsets, strict=True)):
            if word is None:
                piece_words.append(None)
                continue
            if word not in index_of:
                index_of[word] = len(word_spans)
                word_spans.append((start, end))
                first_pieces.append(piece)
            else:
                first, _ = word_spans[index_of[word]]
                word_spans[index_of[word]] = (first, end)
            piece_words.append(index_of[word])
        return TextPieces(list(encoding.ids), piece_words, word_spans, first_pieces)

    def window_offsets(self, piece_count: int) -> list[int]:
        content = self.window_length - 2
        offsets = [0]
        while offsets[-1] + content < piece_count:
            offsets.append(min(offsets[-1] + self.window_stride, piece_count - content))
        return offsets

    def windows(self, ids: list[int]) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """[windows, length] input ids and attention mask, and each window's first piece."""
        offsets = self.window_offsets(len(ids))
        content = self.window_length - 2
        width = min(self.window_length, len(ids) + 2)
        window_ids = np.zeros((len(offsets), width), dtype=np.int64)
        mask = np.zeros_like(window_ids)
        for row, offset in enumerate(offsets):
            chunk = [self.cls_id, *ids[offset : offset + content], self.sep_id]
            window_ids[row, : len(chunk)] = chunk
            mask[row, : len(chunk)] = 1
        return window_ids, mask, offsets


def merge_windows(logits: np.ndarray, offsets: list[int], piece_count: int) -> np.ndarray:
    """[pieces, tags]: the windows' logits (``[windows, length, tags]``) averaged where they overlap."""
    total = np.zeros((piece_count, logits.shape[-1]), dtype=np.float64)
    count = np.zeros((piece_count, 1), dtype=np.float64)
    for row, offset in enumerate(offsets):
        length = min(piece_count - offset, logits.shape[1] - 2)
        total[offset : offset + length] += logits[row, 1 : 1 + length]
        count[offset : offset + length] += 1
    return total / np.maximum(count, 1)


def _allowed_transitions(tags: tuple[str, ...] | list[str]) -> tuple[np.ndarray, np.ndarray]:
    """BIO's rules: ``I-X`` only after ``B-X`` or ``I-X``; a text does not start inside a mention."""
    count = len(tags)
    allowed = np.ones((count, count), dtype=bool)
    for j, tag in enumerate(tags):
        if tag.startswith("I-"):
            for i, previous in enumerate(tags):
                allowed[i, j] = previous != "O" and previous[2:] == tag[2:]
    start = np.array([not tag.startswith("I-") for tag in tags])
    return allowed, start


def viterbi_tags(
    word_logits: np.ndarray, outside_bias: float = 0.0, tags: tuple[str, ...] = TAGS
) -> list[int]:
    """The most likely tag sequence that BIO allows (word logits ``[words, tags]``), rather than
    each word's own best tag: a mention is never cut into fragments by one doubtful word."""
    if len(word_logits) == 0:
        return []
    shifted = word_logits.astype(np.float64) - word_logits.max(axis=-1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    log_probabilities[:, tags.index("O")] += outside_bias
    allowed, start = _allowed_transitions(tags)
    transitions = np.where(allowed, 0.0, -np.inf)
    score = np.where(start, log_probabilities[0], -np.inf)
    back = np.zeros(log_probabilities.shape, dtype=np.int64)
    for position in range(1, len(log_probabilities)):
        candidates = score[:, None] + transitions
        back[position] = candidates.argmax(axis=0)
        score = candidates.max(axis=0) + log_probabilities[position]
    path = [int(score.argmax())]
    for position in range(len(log_probabilities) - 1, 0, -1):
        path.append(int(back[position][path[-1]]))
    return path[::-1]


def decode_tags(word_tags: list[str], word_spans: list[tuple[int, int]]) -> list[MentionSpan]:
    """BIO tags of words -> character spans. An ``I-`` that does not continue a span of its type
    opens one (the tagger's commonest slip is a missing ``B-``)."""
    spans: list[MentionSpan] = []
    open_type: str | None = None
    start = end = 0
    for tag, (word_start, word_end) in zip(word_tags, word_spans, strict=True):
        prefix, _, kind = tag.partition("-")
        if open_type is not None and (prefix != "I" or kind != open_type):
            spans.append(MentionSpan(start, end, open_type))
            open_type = None
        if prefix == "B" or (prefix == "I" and open_type is None):
            open_type, start = kind, word_start
        if open_type is not None:
            end = word_end
    if open_type is not None:
        spans.append(MentionSpan(start, end, open_type))
    return spans


def word_tag_ids(
    pieces: TextPieces, spans: list[MentionSpan], tags_in_order: tuple[str, ...] = TAGS
) -> list[int]:
    """Training labels: each word's tag from gold spans (outer span kept where they nest)."""
    tags = [0] * len(pieces.word_spans)
    taken = [False] * len(pieces.word_spans)
    for span in sorted(spans, key=lambda s: (s.start - s.end, s.start)):
        words = [
            index
            for index, (start, end) in enumerate(pieces.word_spans)
            if start >= span.start and end <= span.end
        ]
        if not words or any(taken[index] for index in words):
            continue
        for position, index in enumerate(words):
            tags[index] = tags_in_order.index(f"{'B' if position == 0 else 'I'}-{span.type}")
            taken[index] = True
    return tags


class MentionTagger:
    """The ONNX tagger: text -> typed mention spans."""

    def __init__(
        self, directory: str | Path, onnx_file: str | Path, tokenizer_file: str | Path, threads: int = 0
    ):
        import onnxruntime

        self.config = load_tagger_config(directory)
        self.featurizer = TaggerFeaturizer(
            tokenizer_file, self.config.window_length, self.config.window_stride
        )
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(
            str(onnx_file), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, text: str) -> list[MentionSpan]:
        pieces = self.featurizer.pieces(text)
        if not pieces.ids:
            return []
        window_ids, mask, offsets = self.featurizer.windows(pieces.ids)
        # A few windows per run: the encoder's activations (attention alone is windows x heads x
        # 512 x 512 floats per layer) grow with the windows of one run, not with the text.
        runs = [
            self.session.run(
                None,
                {
                    "input_ids": window_ids[first : first + WINDOWS_PER_RUN],
                    "attention_mask": mask[first : first + WINDOWS_PER_RUN],
                },
            )[0]
            for first in range(0, len(window_ids), WINDOWS_PER_RUN)
        ]
        merged = merge_windows(np.concatenate(runs), offsets, len(pieces.ids))
        tags = tuple(self.config.tags)
        best = viterbi_tags(merged[pieces.first_pieces], self.config.outside_bias, tags)
        return decode_tags([tags[tag] for tag in best], pieces.word_spans)
