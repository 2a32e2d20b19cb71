"""DocRED documents as plain text: what the annotator is measured on.

DocRED ships tokens, not text. The text is rebuilt by joining a sentence's tokens with one space
and sentences with one space, and every gold mention is located in it by character offsets, so
that an annotator that never sees the tokens can be scored on exact spans.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, order=True)
class CharMention:
    """A gold mention as a character span ``[start, end)`` of the rebuilt text."""

    start: int
    end: int
    type: str
    entity: int


@dataclass(frozen=True)
class RebuiltText:
    title: str
    text: str
    sentence_spans: tuple[tuple[int, int], ...]
    mentions: tuple[CharMention, ...]

    def clusters(self) -> list[frozenset[tuple[int, int]]]:
        """Each gold entity as the set of its mentions' spans."""
        by_entity: dict[int, set[tuple[int, int]]] = {}
        for mention in self.mentions:
            by_entity.setdefault(mention.entity, set()).add((mention.start, mention.end))
        return [frozenset(spans) for _, spans in sorted(by_entity.items())]


def rebuild_text(raw: dict[str, Any]) -> RebuiltText:
    """One DocRED document's text, sentence spans and gold mentions (character offsets)."""
    token_spans: list[list[tuple[int, int]]] = []
    sentence_spans: list[tuple[int, int]] = []
    parts: list[str] = []
    cursor = 0
    for sentence in raw["sents"]:
        spans: list[tuple[int, int]] = []
        for token in sentence:
            if parts:
                parts.append(" ")
                cursor += 1
            spans.append((cursor, cursor + len(token)))
            parts.append(token)
            cursor += len(token)
        token_spans.append(spans)
        sentence_spans.append((spans[0][0], spans[-1][1]) if spans else (cursor, cursor))
    mentions = sorted(
        {
            CharMention(
                token_spans[m["sent_id"]][m["pos"][0]][0],
                token_spans[m["sent_id"]][m["pos"][1] - 1][1],
                m["type"],
                entity,
            )
            for entity, vertex in enumerate(raw["vertexSet"])
            for m in vertex
        }
    )
    return RebuiltText(raw["title"], "".join(parts), tuple(sentence_spans), tuple(mentions))
