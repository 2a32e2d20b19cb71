"""The local pipeline assembly: following documents through the stages' own records."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmrc import docred
from lmrc.contracts import CandidateSetEvent, RelationSetEvent
from lmrc.local.broker import LocalBroker
from lmrc.local.pipeline import CompletionTracker, LocalPipeline
from lmrc.runtime import KafkaSettings
from lmrc.topology import TopicNames
from tests.helpers import produce, wait_for

pytestmark = pytest.mark.broker


def test_the_tracker_sees_records_on_topics_that_did_not_exist_when_it_started(
    broker: LocalBroker, unique: str, tmp_path: Path
) -> None:
    """The stages create their topics as they start, possibly after the tracker: it must still read
    every partition from the beginning (a tracker that skipped them waited forever)."""
    pipeline = LocalPipeline(
        KafkaSettings(bootstrap_servers=broker.bootstrap_servers),
        tgi_url="",
        adapter_id="",
        graph_path=tmp_path / "graph.lbug",
        topics=TopicNames(unique),
        partitions=2,
    )
    document = docred.to_document_event(docred.load_split("holdout")[0])
    client = pipeline.kafka.client_config()
    tracker = CompletionTracker(client, pipeline, {document.doc_id})
    try:
        candidates = CandidateSetEvent(
            event_id="c",
            doc_id=document.doc_id,
            pairs=[],
            pairs_scored=document.pair_count(),
            proposer_model_version="p",
            document=document,
        )
        relations = RelationSetEvent(event_id="r", doc_id=document.doc_id, relations=[], candidate_pairs=0)
        produce(broker.bootstrap_servers, pipeline.topics.candidates, [candidates.model_dump_json().encode()])
        produce(broker.bootstrap_servers, pipeline.topics.relations, [relations.model_dump_json().encode()])

        def seen() -> bool:
            tracker.poll(0.2)
            return tracker.progress.through_classifier == {document.doc_id}

        wait_for(seen, what="both records seen")
        assert tracker.progress.through_proposer == {document.doc_id}
        assert not tracker.progress.done  # the sink has not committed the relation set
        assert tracker.progress.written == set()
    finally:
        tracker.close()
