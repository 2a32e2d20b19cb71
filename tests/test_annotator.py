"""The annotator: tags, alias rules, documents with character offsets, both engines, and the
service on the real broker (texts in, documents or dead letters out)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from lmrc import docred
from lmrc.annotator.clusters import cluster_mentions
from lmrc.annotator.document import build_document, names_only
from lmrc.annotator.engine import Annotator
from lmrc.annotator.service import AnnotatorSettings, build_runtime
from lmrc.annotator.spacy_engine import Segmented
from lmrc.annotator.tagger import (
    DEFAULT_TAGGER_DIR,
    TAGS,
    MentionSpan,
    TaggerFeaturizer,
    decode_tags,
    viterbi_tags,
    word_tag_ids,
)
from lmrc.contracts import DeadLetterEvent, DocumentEvent, TextDocumentEvent
from lmrc.docred.annotation import AnnotationScores
from lmrc.docred.text import rebuild_text
from lmrc.local.broker import LocalBroker
from lmrc.paths import REPO_ROOT, encoder_tokenizer_file
from tests.helpers import metric_value, produce, read_topic, running, service_test_fields

#: A real paragraph that none of the datasets here holds (README's example of `lmrc run --text`).
#: DocRED's entity types, what any tag of the shipped tag set names.
TAGS_TYPES = {tag[2:] for tag in TAGS if tag != "O"}
PARAGRAPH = (REPO_ROOT / "docs" / "examples" / "apache-kafka.txt").read_text(encoding="utf-8").strip()


def spans_of(text: str, *names: str, kind: str = "PER") -> list[MentionSpan]:
    """Each name's first occurrence after the previous one, as a span."""
    found, cursor = [], 0
    for name in names:
        start = text.index(name, cursor)
        found.append(MentionSpan(start, start + len(name), kind))
        cursor = start + 1
    return found


def test_tags_made_from_gold_spans_decode_to_those_spans() -> None:
    featurizer = TaggerFeaturizer(encoder_tokenizer_file())
    for raw in docred.load_split("holdout")[:10]:
        rebuilt = rebuild_text(raw)
        pieces = featurizer.pieces(rebuilt.text)
        gold = {MentionSpan(m.start, m.end, m.type) for m in rebuilt.mentions}
        nested = {a for a in gold for b in gold if a != b and b.start <= a.start and a.end <= b.end}
        decoded = decode_tags([TAGS[t] for t in word_tag_ids(pieces, list(gold))], pieces.word_spans)
        assert set(decoded) == gold - nested, raw["title"]


def test_an_inside_tag_without_a_beginning_opens_a_mention() -> None:
    words = [(0, 3), (4, 9), (10, 12), (13, 18)]
    assert decode_tags(["I-PER", "I-PER", "O", "B-LOC"], words) == [
        MentionSpan(0, 9, "PER"),
        MentionSpan(13, 18, "LOC"),
    ]
    assert decode_tags(["B-ORG", "I-LOC", "O", "O"], words) == [
        MentionSpan(0, 3, "ORG"),
        MentionSpan(4, 9, "LOC"),
    ]


def test_aliases_join_their_entity_and_full_names_never_merge() -> None:
    text = (
        "Jay Kreps met Jay Rao at the National Aeronautics and Space Administration ( NASA ). "
        "Kreps later left NASA, and Jay stayed. The Confluent office and Confluent 's staff moved. "
        "Arjuna ( अर्जुन ) smiled at Derek Shepherd ( Patrick Dempsey )."
    )
    people = spans_of(text, "Jay Kreps", "Jay Rao")
    agency = spans_of(text, "National Aeronautics and Space Administration", "NASA", kind="ORG")
    later = spans_of(text, "Kreps later") + spans_of(text, "NASA,", kind="ORG")
    later = [
        MentionSpan(later[0].start, later[0].start + 5, "PER"),
        MentionSpan(later[1].start, later[1].end - 1, "ORG"),
    ]
    jay = spans_of(text, "Jay stayed")
    jay = [MentionSpan(jay[0].start, jay[0].start + 3, "PER")]
    company = spans_of(text, "The Confluent", "Confluent 's", kind="ORG")
    company = [
        MentionSpan(company[0].start, company[0].end, "ORG"),
        MentionSpan(company[1].start, company[1].start + 9, "ORG"),
    ]
    aliases = spans_of(text, "Arjuna", "अर्जुन", "Derek Shepherd", "Patrick Dempsey")
    spans = sorted([*people, *agency, *later, *jay, *company, *aliases], key=lambda s: s.start)
    groups = [
        sorted(text[spans[i].start : spans[i].end] for i in group) for group in cluster_mentions(text, spans)
    ]
    assert ["Jay Kreps", "Kreps"] in groups
    assert ["Jay Rao"] in groups  # never merged with the other full name
    assert ["Jay"] in groups  # a part of two full names stays alone
    assert ["NASA", "NASA", "National Aeronautics and Space Administration"] in groups
    assert ["Confluent", "The Confluent"] in groups
    assert ["Arjuna", "अर्जुन"] in groups  # its spelling in another script
    assert ["Derek Shepherd"] in groups and ["Patrick Dempsey"] in groups  # a role and its actor


def test_documents_keep_character_offsets_and_cut_tokens_at_mention_boundaries() -> None:
    text = "LinkedIn's founders met. They moved to Mountain View. California was next."
    # A segmenter's view: "LinkedIn's" one token, and a sentence break between "Mountain" and
    # "View" that the mention "Mountain View" crosses.
    tokens, cursor = [], 0
    for word in text.split(" "):
        start = text.index(word, cursor)
        end = start + len(word)
        if word.endswith("."):
            tokens += [(start, end - 1), (end - 1, end)]
        else:
            tokens.append((start, end))
        cursor = end
    view = text.index("View")
    sentences = [(0, 24), (25, view), (view, text.index("California")), (text.index("California"), len(text))]
    mentions = [
        MentionSpan(0, 8, "ORG"),
        MentionSpan(text.index("Mountain"), view + 4, "LOC"),
        MentionSpan(text.index("California"), text.index("California") + 10, "LOC"),
    ]
    document = build_document("d", "t", text, Segmented(sentences, tokens, []), mentions)
    assert document.sentences[0][:2] == ["LinkedIn", "'s"]  # the token cut where the mention ends
    assert len(document.sentences) == 3  # the sentences the mention crossed, joined
    assert [len(entity.mentions) for entity in document.entities] == [1, 1, 1]
    for entity in document.entities:
        mention = entity.mentions[0]
        words = document.sentences[mention.sent_id][mention.start : mention.end]
        assert " ".join(words) == text[mention.start_char : mention.end_char] == mention.name


def test_text_events_refuse_what_is_not_text() -> None:
    TextDocumentEvent(doc_id="ok", text="Tabs\tand\nline breaks are text.\r\n")
    for bad in ("", "   \n", "binary\x00data", "escape \x1b[31m red", "C1 \x85 control"):
        with pytest.raises(ValidationError):
            TextDocumentEvent(doc_id="bad", text=bad)
    with pytest.raises(ValidationError, match="at most 100000 characters"):
        TextDocumentEvent(doc_id="long", text="word " * 20_001)


@pytest.fixture(scope="module")
def tagger_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped tagger exported to ONNX, as `lmrc annotator export` does."""
    from lmrc.annotator.training.export import export_tagger

    return export_tagger(DEFAULT_TAGGER_DIR, tmp_path_factory.mktemp("tagger") / "tagger.onnx")


def test_the_shipped_tagger_finds_the_mentions_of_holdout_texts(tagger_onnx: Path) -> None:
    annotator = Annotator("tagger", DEFAULT_TAGGER_DIR, tagger_onnx)
    scores = AnnotationScores()
    for raw in docred.load_split("holdout")[:8]:
        text = rebuild_text(raw).text
        document = annotator.annotate(raw["title"], raw["title"], text)
        for entity in document.entities:
            for mention in entity.mentions:
                assert text[mention.start_char : mention.end_char] == mention.name
        scores.add(raw, document.model_dump(mode="json"))
    figures = scores.as_dict()
    # docs/results/annotator-holdout.json has the whole split; these 8 documents are no easier.
    assert figures["mention_f1"] > 0.8 and figures["entity_f1"] > 0.65, figures


def test_both_engines_read_a_paragraph_no_dataset_holds(tagger_onnx: Path) -> None:
    for engine in ("tagger", "spacy"):
        annotator = Annotator(engine, DEFAULT_TAGGER_DIR, tagger_onnx)
        document = annotator.annotate("kafka", "Apache Kafka", PARAGRAPH)
        by_name = {e.name: e for e in document.entities}
        assert by_name["Jay Kreps"].type == "PER", (engine, sorted(by_name))
        assert "2012" in by_name and by_name["2012"].type == "TIME", engine
        if engine == "tagger":  # spaCy's small model misses the surname alone, calls LinkedIn a place
            assert by_name["LinkedIn"].type == "ORG"
            assert [m.name for m in by_name["Jay Kreps"].mentions] == ["Jay Kreps", "Kreps", "Kreps"]
            assert [m.name for m in by_name["Neha Narkhede"].mentions] == ["Neha Narkhede", "Narkhede"]


@pytest.mark.broker
def test_service_annotates_texts_and_dead_letters_what_it_cannot_read(
    broker: LocalBroker, unique: str, tagger_onnx: Path
) -> None:
    fields = service_test_fields(broker.bootstrap_servers, "annotator", unique, "texts")
    settings = AnnotatorSettings(
        **fields, output_topic=f"{unique}.documents", onnx_path=tagger_onnx, max_text_chars=2000
    )

    def text(doc_id: str, body: str, **extra: object) -> tuple[str, bytes]:
        return doc_id, json.dumps({"doc_id": doc_id, "text": body, **extra}).encode()

    german = "Der Hund lief schnell über die Straße, weil er den Ball sehen wollte, und die Kinder " * 3
    messages = [
        text("kafka", PARAGRAPH, title="Apache Kafka"),
        text("plain", "nothing here names anything at all, it just goes on and on."),
        text("empty", "  "),
        text("binary", "PK\x03\x04\x00\x00 zipped"),
        text("declared", "Ein kurzer Satz.", language="de"),
        text("german", german),
        text(
            "merkel",  # passes the stop-word check; py3langid names German
            "Angela Merkel war von 2005 bis 2021 Bundeskanzlerin. Sie wurde am 17. Juli 1954 in Hamburg "
            "geboren und wuchs in der DDR auf. Was sie in Templin lernte, half ihr so an der Universität "
            "in Leipzig, wo sie Physik studierte. Also ging sie 1978 an die Akademie in Berlin.",
        ),
        text(
            "chinese",
            "阿里巴巴集团由马云于1999年在杭州创立\uff0c是中国最大的电子商务公司之一\uff0c总部位于杭州。",
        ),
        text("long", "Kafka. " * 400),
        ("bytes", b"\xff\xfe\x00not utf-8"),
    ]
    with running(build_runtime(settings)) as runtime:
        for key, value in messages:
            produce(broker.bootstrap_servers, settings.input_topic, [value], key=key)
        out = read_topic(broker.bootstrap_servers, [settings.output_topic or ""], expect=2)
        dlq = read_topic(broker.bootstrap_servers, [settings.dead_letter_topic], expect=8)
        annotated = metric_value(
            runtime.http_port, "lmrc_annotator_documents_total", service=settings.service_name
        )
    documents = {d.doc_id: d for d in (DocumentEvent.model_validate_json(r.value or b"") for r in out)}
    assert set(documents) == {"kafka", "plain"} and len(out) == 2 and annotated == 2
    assert documents["plain"].entities == []  # goes on, and completes with zero relations
    kafka = documents["kafka"]
    assert kafka.title == "Apache Kafka" and kafka.source and kafka.source.attributes["annotator"]
    assert len(kafka.entities) >= 8
    for entity in kafka.entities:
        for mention in entity.mentions:
            assert PARAGRAPH[mention.start_char : mention.end_char] == mention.name
    letters = [DeadLetterEvent.model_validate_json(r.value or b"") for r in dlq]
    reasons = {letter.origin.key: (letter.error_class, letter.error_message) for letter in letters}
    assert len(letters) == 8
    assert set(reasons) == {"empty", "binary", "declared", "german", "merkel", "chinese", "long", "bytes"}
    assert reasons["empty"][0] == "SchemaValidationError" and "the text is empty" in reasons["empty"][1]
    assert (
        reasons["binary"][0] == "SchemaValidationError" and "control character U+0003" in reasons["binary"][1]
    )
    assert reasons["declared"] == (
        "UnsupportedLanguage",
        "text 'declared' is in 'de'; the annotator reads English (en)",
    )
    assert (
        reasons["german"][0] == "UnsupportedLanguage" and "does not look like English" in reasons["german"][1]
    )
    assert reasons["merkel"][0] == "UnsupportedLanguage"
    assert "looks like language 'de'" in reasons["merkel"][1]
    assert reasons["chinese"][0] == "UnsupportedLanguage"
    assert "mostly not in Latin letters" in reasons["chinese"][1]
    assert reasons["long"][0] == "TextTooLong" and "limit 2000" in reasons["long"][1]
    assert reasons["bytes"][0] == "MalformedJSON"


def test_decoding_follows_bio_and_the_outside_bias_trades_recall_for_precision() -> None:
    def logits(*rows: dict[str, float]) -> np.ndarray:
        table = np.full((len(rows), len(TAGS)), -5.0)
        for position, row in enumerate(rows):
            for tag, value in row.items():
                table[position, TAGS.index(tag)] = value
        return table

    # "Republic of Kazakhstan": each word's own best tags would cut it in two (B, O, I).
    words = logits({"B-LOC": 3.0}, {"O": 1.0, "I-LOC": 0.9}, {"I-LOC": 3.0, "B-LOC": 0.5})
    assert [TAGS[t] for t in words.argmax(axis=-1)] == ["B-LOC", "O", "I-LOC"]
    assert [TAGS[t] for t in viterbi_tags(words)] == ["B-LOC", "I-LOC", "I-LOC"]
    # A text never starts inside a mention; an inside tag never follows another type.
    assert TAGS[viterbi_tags(logits({"I-PER": 2.0, "B-PER": 1.0}))[0]] == "B-PER"
    mixed = [TAGS[t] for t in viterbi_tags(logits({"B-ORG": 3.0}, {"I-LOC": 2.0, "I-ORG": 1.5}))]
    assert mixed == ["B-ORG", "I-ORG"]
    # A doubtful mention goes when O is favoured.
    doubtful = logits({"B-MISC": 1.0, "O": 0.8})
    assert TAGS[viterbi_tags(doubtful)[0]] == "B-MISC" and TAGS[viterbi_tags(doubtful, 0.5)[0]] == "O"


def test_common_nouns_taken_for_names_are_dropped_and_names_kept() -> None:
    text = "The parliament met iPhone makers, de la Rocha and अर्जुन in early 2011 for three days."

    def span(words: str, kind: str) -> MentionSpan:
        start = text.index(words)
        return MentionSpan(start, start + len(words), kind)

    spans = [
        span("parliament", "ORG"),
        span("iPhone", "MISC"),
        span("de la Rocha", "PER"),
        span("अर्जुन", "PER"),
        span("early 2011", "TIME"),
        span("three", "NUM"),
    ]
    kept = [text[s.start : s.end] for s in names_only(text, spans)]
    assert kept == ["iPhone", "de la Rocha", "अर्जुन", "early 2011", "three"]


def test_the_capital_letter_rule_holds_for_docreds_name_types_only() -> None:
    """Another schema's mentions are common nouns by nature (CDR: "naloxone", "hypotension"): the
    rule that drops lowercase PER/ORG/LOC/MISC spans must keep them (it cut CDR's mention recall
    on dev to 0.19)."""
    text = "Naloxone reversed the hypotension caused by clonidine in the parliament."

    def span(words: str, kind: str) -> MentionSpan:
        start = text.index(words)
        return MentionSpan(start, start + len(words), kind)

    spans = [span("hypotension", "DISE"), span("clonidine", "CHEM"), span("parliament", "ORG")]
    assert [text[s.start : s.end] for s in names_only(text, spans)] == ["hypotension", "clonidine"]


def test_a_tagger_on_another_encoder_trains_exports_and_serves_with_that_encoders_tokenizer(
    tmp_path: Path,
) -> None:
    """`lmrc annotator train --encoder all-mpnet-base-v2` (the raw-text lever a larger encoder is):
    the tagger records its encoder, and the annotator reads texts with that encoder's tokenizer
    (MiniLM's ids would mean other words to it) and the export's tag layer."""
    from lmrc.annotator.training.export import export_tagger
    from lmrc.annotator.training.train import TaggerTrainOptions, train_tagger
    from lmrc.contracts.schema import shipped_schema
    from lmrc.docred.dataset import Dataset
    from lmrc.paths import MPNET_ENCODER, MPNET_PACKAGE

    dataset = Dataset(
        "tiny",
        shipped_schema("redocred"),
        docred.load_split("train")[:2],
        docred.load_split("validation")[:1],
    )
    out = tmp_path / "tagger"
    options = TaggerTrainOptions(
        out=out, version="t-mpnet", encoder=MPNET_ENCODER, epochs=1, extra_documents=()
    )
    config = train_tagger(options, dataset)
    assert (config.encoder, config.encoder_package) == (MPNET_ENCODER, MPNET_PACKAGE)
    export_tagger(out)
    annotator = Annotator("tagger", out)
    assert annotator.tagger is not None
    mpnet, minilm = (
        TaggerFeaturizer(encoder_tokenizer_file(name)) for name in (MPNET_ENCODER, "all-MiniLM-L6-v2")
    )
    read = annotator.tagger.featurizer.pieces(PARAGRAPH).ids
    assert read == mpnet.pieces(PARAGRAPH).ids != minilm.pieces(PARAGRAPH).ids
    document = annotator.annotate("kafka", "kafka", PARAGRAPH)
    assert document.sentences and all(m.type in TAGS_TYPES for e in document.entities for m in e.mentions)


def test_a_tagger_compressed_to_int4_deltas_is_smaller_and_tags_as_before(tmp_path: Path) -> None:
    """`lmrc annotator compress` (how a base-size tagger fits in git): the trained layers stored as
    their 4-bit change from the pretrained encoder tag a text as the fp16 weights do."""
    import torch

    from lmrc.annotator.tagger import WEIGHTS_FILE, load_tagger_config
    from lmrc.annotator.training.tagger_model import load_tagger
    from lmrc.cli import main

    out = tmp_path / "int4"
    assert main(["annotator", "compress", "--tagger", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert not out.exists()
    assert main(["annotator", "compress", "--tagger", str(DEFAULT_TAGGER_DIR), "--out", str(out)]) == 0
    assert load_tagger_config(out).weights_format == "int4-delta"
    assert (out / WEIGHTS_FILE).stat().st_size < 0.4 * (DEFAULT_TAGGER_DIR / WEIGHTS_FILE).stat().st_size
    (fp16, config), (int4, _) = load_tagger(DEFAULT_TAGGER_DIR), load_tagger(out)
    featurizer = TaggerFeaturizer(encoder_tokenizer_file(config.encoder))
    text = " ".join(" ".join(" ".join(s) for s in raw["sents"]) for raw in docred.load_split("holdout")[:3])
    ids, mask, _offsets = featurizer.windows(featurizer.pieces(text).ids)
    with torch.no_grad():
        inputs = (torch.from_numpy(ids), torch.from_numpy(mask))
        before, after = (model(*inputs).argmax(-1)[torch.from_numpy(mask) > 0] for model in (fp16, int4))
    assert len(before) > 500 and (before == after).float().mean() >= 0.98
    assert (before != 0).any()  # the text has names: agreement is not all outside tags
