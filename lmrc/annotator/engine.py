"""Text -> DocumentEvent with one of two mention engines: the trained tagger (default) or
spaCy's NER. Both use spaCy for sentences and tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from lmrc.annotator.document import build_document, names_only
from lmrc.annotator.spacy_engine import load_pipeline, segment
from lmrc.annotator.tagger import DEFAULT_TAGGER_DIR, MentionTagger, load_tagger_config, tagger_onnx_path
from lmrc.contracts import DocumentEvent, SourceMetadata
from lmrc.paths import encoder_tokenizer_file

EngineName = Literal["tagger", "spacy"]


def tagger_onnx_file(tagger_dir: Path, onnx_path: Path | None = None) -> Path:
    """The ONNX model the annotator serves: exported beforehand (serving holds no torch)."""
    path = onnx_path or tagger_onnx_path(tagger_dir, load_tagger_config(tagger_dir))
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing; run `lmrc annotator export --tagger {tagger_dir}` where the train "
            "extra is installed, or mount the exported file"
        )
    return path


class Annotator:
    """Finds sentences, tokens, typed mentions and entities in a text."""

    def __init__(
        self,
        engine: EngineName = "tagger",
        tagger_dir: Path = DEFAULT_TAGGER_DIR,
        onnx_path: Path | None = None,
        threads: int = 0,
    ) -> None:
        self.engine = engine
        self.nlp = load_pipeline(with_ner=engine == "spacy")
        self.tagger = (
            MentionTagger(
                tagger_dir,
                tagger_onnx_file(tagger_dir, onnx_path),
                encoder_tokenizer_file(load_tagger_config(tagger_dir).encoder),
                threads,
            )
            if engine == "tagger"
            else None
        )
        self.version = (
            self.tagger.config.version
            if self.tagger
            else f"spacy-{self.nlp.meta['name']}-{self.nlp.meta['version']}"
        )

    def annotate(
        self, doc_id: str, title: str, text: str, source: SourceMetadata | None = None
    ) -> DocumentEvent:
        segmented = segment(self.nlp, text)
        spans = self.tagger(text) if self.tagger is not None else segmented.entities
        return build_document(doc_id, title, text, segmented, names_only(text, spans), source)

    def english_share(self, text: str, sample_words: int = 200) -> tuple[int, int]:
        """(common English words, words) among the first alphabetic words: a cheap language check."""
        words = [token for token in self.nlp.tokenizer(text[:5000]) if token.is_alpha][:sample_words]
        return sum(1 for token in words if token.is_stop), len(words)
