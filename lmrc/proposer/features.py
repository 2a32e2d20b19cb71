"""Documents to encoder inputs, ATLOP-style, with the fast tokenizer alone (no torch).

Every mention is wrapped in ``*`` markers; a mention is represented by its start marker. A
document longer than the encoder's window is cut into overlapping windows, each framed by
[CLS] ... [SEP]; the model merges the windows back (hidden states averaged, attention summed and
renormalised where windows overlap).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from lmrc.contracts import DocumentEvent

MARKER = "*"
#: DocRED's entity types, the default schema's: type i is embedded as i + 1, and 0 stands for a
#: type the model never saw.
DOCRED_ENTITY_TYPES = ("PER", "ORG", "LOC", "TIME", "NUM", "MISC")


@dataclass(frozen=True)
class DocumentFeatures:
    """Arrays the model takes for one document (all int64)."""

    window_input_ids: np.ndarray  # [windows, window_length]
    window_attention_mask: np.ndarray  # [windows, window_length]
    window_offsets: np.ndarray  # [windows]: global position of each window's first content token
    token_mask: np.ndarray  # [tokens]: its length is the document's length in word pieces
    mention_positions: np.ndarray  # [entities, max_mentions]: start-marker positions (0 = padding)
    mention_mask: np.ndarray  # [entities, max_mentions]
    entity_types: np.ndarray  # [entities]: 1 + index into the schema's entity types (0: unknown)
    pair_heads: np.ndarray  # [pairs]
    pair_tails: np.ndarray  # [pairs]
    #: Not a model input: the sentence of every word piece (markers count with their mention), so
    #: a pair's token attention sums to its sentence attention (evidence).
    token_sentences: np.ndarray  # [tokens]
    sentence_count: int

    @property
    def token_count(self) -> int:
        return int(self.token_mask.shape[0])

    def as_inputs(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in INPUT_NAMES}


#: The pair graph's outputs: pair logits, and when the artifact has the relation head also
#: relation logits and the pairs' context attention over word pieces (evidence).
OUTPUT_NAMES = ("pair_logits", "relation_logits", "pair_attention")

#: The export is two graphs: the document graph encodes a document once (encoder, window merge,
#: entity pooling); the pair graph scores its pairs from that, in as many runs as memory asks.
DOCUMENT_INPUT_NAMES = (
    "window_input_ids",
    "window_attention_mask",
    "window_offsets",
    "token_mask",
    "mention_positions",
    "mention_mask",
)
#: What a document's features hold, in the order of ``PairScorer.pair_representations``.
INPUT_NAMES = (*DOCUMENT_INPUT_NAMES, "entity_types", "pair_heads", "pair_tails")
DOCUMENT_OUTPUT_NAMES = ("hidden", "entities", "entity_attention")
PAIR_INPUT_NAMES = (*DOCUMENT_OUTPUT_NAMES, "entity_types", "pair_heads", "pair_tails")


class DocumentFeaturizer:
    """``entity_types``: the schema's, in the model's order; ``type_pairs``: the (head type, tail
    type) pairs some relation of the schema allows (None: every ordered pair is scored)."""

    def __init__(
        self,
        tokenizer_file: str | Path,
        window_length: int = 512,
        window_stride: int = 256,
        entity_types: Sequence[str] = DOCRED_ENTITY_TYPES,
        type_pairs: Iterable[Sequence[str]] | None = None,
    ):
        self.type_index = {name: index + 1 for index, name in enumerate(entity_types)}
        self.type_pairs = None if type_pairs is None else {(str(h), str(t)) for h, t in type_pairs}
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        # RoBERTa-style specials (MPNet, whose vocabulary also holds [CLS] as a plain word) or
        # BERT-style ones (MiniLM).
        self.cls_id = self._id("<s>", "[CLS]")
        self.sep_id = self._id("</s>", "[SEP]")
        self.pad_id = self._id("<pad>", "[PAD]")
        self.window_length = window_length
        self.window_stride = window_stride

    def _id(self, *tokens: str) -> int:
        """The id of the first of ``tokens`` the vocabulary has."""
        for token in tokens:
            token_id = self.tokenizer.token_to_id(token)
            if token_id is not None:
                return token_id
        raise ValueError(f"tokenizer has none of {', '.join(tokens)}")

    def word_pieces(self, document: DocumentEvent) -> tuple[list[int], list[list[int]], list[int]]:
        """Word-piece ids of the marked document, each entity's start-marker positions, and the
        sentence of every word piece."""
        starts: dict[tuple[int, int], list[int]] = {}
        ends: set[tuple[int, int]] = set()
        for entity_index, entity in enumerate(document.entities):
            for mention in entity.mentions:
                starts.setdefault((mention.sent_id, mention.start), []).append(entity_index)
                ends.add((mention.sent_id, mention.end - 1))
        words: list[str] = []
        sentence_of_word: list[int] = []
        marker_of_word: dict[int, list[int]] = {}
        for sent_id, sentence in enumerate(document.sentences):
            for position, word in enumerate(sentence):
                key = (sent_id, position)
                if key in starts:
                    marker_of_word[len(words)] = starts[key]
                    words.append(MARKER)
                words.append(word)
                if key in ends:
                    words.append(MARKER)
            sentence_of_word.extend([sent_id] * (len(words) - len(sentence_of_word)))
        encoding = self.tokenizer.encode(words, is_pretokenized=True, add_special_tokens=False)
        first_piece: dict[int, int] = {}
        piece_sentences: list[int] = []
        for piece, word in enumerate(encoding.word_ids):
            if word is not None and word not in first_piece:
                first_piece[word] = piece
            piece_sentences.append(sentence_of_word[word] if word is not None else 0)
        positions: list[list[int]] = [[] for _ in document.entities]
        for word, entities in marker_of_word.items():
            for entity_index in entities:
                positions[entity_index].append(first_piece[word])
        return list(encoding.ids), positions, piece_sentences

    def featurize(self, document: DocumentEvent) -> DocumentFeatures:
        pieces, positions, piece_sentences = self.word_pieces(document)
        content = self.window_length - 2
        offsets = [0]
        while offsets[-1] + content < len(pieces):
            offsets.append(min(offsets[-1] + self.window_stride, len(pieces) - content))
        windows = np.full((len(offsets), self.window_length), self.pad_id, dtype=np.int64)
        mask = np.zeros_like(windows)
        for index, offset in enumerate(offsets):
            chunk = [self.cls_id, *pieces[offset : offset + content], self.sep_id]
            windows[index, : len(chunk)] = chunk
            mask[index, : len(chunk)] = 1
        width = windows.shape[1] if len(offsets) > 1 else int(mask.sum())
        max_mentions = max((len(p) for p in positions), default=1) or 1
        mention_positions = np.zeros((len(positions), max_mentions), dtype=np.int64)
        mention_mask = np.zeros_like(mention_positions)
        for entity_index, entity_positions in enumerate(positions):
            mention_positions[entity_index, : len(entity_positions)] = entity_positions
            mention_mask[entity_index, : len(entity_positions)] = 1
        n = len(positions)
        allowed = ~np.eye(n, dtype=bool)
        if self.type_pairs is not None:
            kinds = [entity.type for entity in document.entities]
            allowed &= np.asarray(
                [[(head, tail) in self.type_pairs for tail in kinds] for head in kinds], dtype=bool
            ).reshape(n, n)
        heads, tails = np.nonzero(allowed)
        return DocumentFeatures(
            window_input_ids=windows[:, :width],
            window_attention_mask=mask[:, :width],
            window_offsets=np.asarray(offsets, dtype=np.int64),
            token_mask=np.ones(len(pieces), dtype=np.int64),
            mention_positions=mention_positions,
            mention_mask=mention_mask,
            entity_types=np.asarray(
                [self.type_index.get(e.type, 0) for e in document.entities], dtype=np.int64
            ),
            pair_heads=heads.astype(np.int64),
            pair_tails=tails.astype(np.int64),
            token_sentences=np.asarray(piece_sentences, dtype=np.int64),
            sentence_count=len(document.sentences),
        )
