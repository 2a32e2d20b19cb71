"""Showing strings from events safely: on a terminal and in XML.

Names and titles come from documents users publish; a control character in them must neither
drive the terminal (escape sequences) nor make an export unreadable (XML 1.0 forbids most C0
characters). Both helpers keep every other character as it is. Long names are cut to the
terminal's width only when output goes to one.
"""

from __future__ import annotations

import re
import shutil
import sys

# C0 controls but tab, DEL, C1 controls; and the bidirectional overrides that reorder what is shown.
_TERMINAL_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# What XML 1.0 does not allow in a document at all.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with control and reordering characters shown as ``\\xNN`` / ``\\uNNNN`` escapes."""
    return _TERMINAL_UNSAFE.sub(_escape, text)


def terminal_width() -> int | None:
    """The terminal's columns when standard output is one (``COLUMNS`` overrides), else None: a file
    or a pipe gets every cell in full."""
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def shorten(text: str, width: int | None) -> str:
    """``text`` cut to ``width`` characters, the last one "…" when cut; None: as it is."""
    return text if width is None or len(text) <= width else text[: max(0, width - 1)] + "…"


def xml_text(text: str) -> str:
    """``text`` with the characters XML 1.0 cannot carry shown as ``\\xNN`` / ``\\uNNNN`` escapes."""
    return _XML_INVALID.sub(_escape, text)


# Control characters (C0, DEL, C1) and lone surrogates: no name, type, id or title needs them, and a
# graph store may mangle them (FalkorDB's client inlines parameters; a NUL ends the query). Line
# breaks and tabs occur in real names (DocRED has mentions spanning a line break): they become spaces.
_WHITESPACE_CONTROL = re.compile("[\t\n\x0b\x0c\r\x85]+")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def sentence_text(tokens: list[str]) -> str:
    """A sentence's tokens as one line of text for the graph: joined by spaces, control characters
    (which a document's tokens may carry) as spaces."""
    return _CONTROL.sub(" ", _WHITESPACE_CONTROL.sub(" ", " ".join(tokens)))


def graph_text(text: str) -> str:
    """``text`` with line breaks and tabs as single spaces; ValueError naming the first other control
    character and its position: the contract rejects such text (a dead letter with this reason)."""
    text = _WHITESPACE_CONTROL.sub(" ", text)
    found = _CONTROL.search(text)
    if found:
        raise ValueError(
            f"control character {_escape(found)} at position {found.start()} is not allowed "
            f"(names, types, ids and titles are stored in the graph)"
        )
    return text
