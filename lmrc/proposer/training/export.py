"""ONNX export of the proposer as two graphs with dynamic axes, through torch.export (the
TorchScript-based exporter is deprecated):

- the document graph: encoder, window merge and entity pooling, run once per document;
- the pair graph: localized context pooling and the heads, run on the pairs in runs as long as
  the pair budget allows, from the document graph's outputs (the text is never re-encoded).

``int8`` quantizes both with ONNX Runtime's dynamic quantization (weights int8 per channel,
activations per run): what the CPU serves fastest; the fp32 graphs stay the reference.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from lmrc.contracts import DocumentEvent, Entity, Mention
from lmrc.proposer.artifact import (
    Precision,
    graphs_exist,
    load_config,
    onnx_path,
    pair_graph_path,
    tokenizer_file,
)
from lmrc.proposer.features import (
    DOCUMENT_INPUT_NAMES,
    DOCUMENT_OUTPUT_NAMES,
    OUTPUT_NAMES,
    PAIR_INPUT_NAMES,
    DocumentFeaturizer,
)
from lmrc.proposer.training.model import PairScorer
from lmrc.proposer.training.torch_model import load_artifact, torch_inputs

DYNAMIC_AXES = {
    "window_input_ids": {0: "windows", 1: "window_length"},
    "window_attention_mask": {0: "windows", 1: "window_length"},
    "window_offsets": {0: "windows"},
    "token_mask": {0: "tokens"},
    "mention_positions": {0: "entities", 1: "mentions"},
    "mention_mask": {0: "entities", 1: "mentions"},
    "hidden": {0: "tokens"},
    "entities": {0: "entities"},
    "entity_attention": {1: "entities", 2: "tokens"},
    "entity_types": {0: "entities"},
    "pair_heads": {0: "pairs"},
    "pair_tails": {0: "pairs"},
}
OPSET = 18

log = logging.getLogger(__name__)


class DocumentGraph(nn.Module):
    """The document graph: :meth:`PairScorer.encode_document`."""

    def __init__(self, scorer: PairScorer) -> None:
        super().__init__()
        self.scorer = scorer

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.scorer.encode_document(*inputs)


class PairGraph(nn.Module):
    """The pair graph: pair logits and, with a relation head, relation logits and evidence attention."""

    def __init__(self, scorer: PairScorer) -> None:
        super().__init__()
        self.scorer = scorer

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        pairs, pair_attention = self.scorer.pairs_of_document(*inputs)
        pair_logits = self.scorer.bilinear(pairs).squeeze(-1)
        if self.scorer.relation_classifier is None:
            return pair_logits
        return pair_logits, self.scorer.relation_classifier(pairs), pair_attention


def _example_document() -> DocumentEvent:
    """Two windows, several multi-mention entities: every path of the graph is traced."""
    words = [f"word{i}" for i in range(700)]
    sentences = [words[i : i + 20] for i in range(0, 700, 20)]
    entities = [
        Entity(
            mentions=[Mention(sent_id=s, start=k, end=k + 2, name=f"e{k}", type="MISC") for s in (k, k + 20)]
        )
        for k in range(3)
    ]
    return DocumentEvent(doc_id="export", sentences=sentences, entities=entities)


def ensure_onnx(artifact_dir: str | Path, path: Path | None = None, precision: Precision = "fp32") -> Path:
    """The artifact's document graph at ``path`` (default: beside it; the pair graph beside that),
    exported (and quantized) first when missing."""
    target = path or onnx_path(artifact_dir, load_config(artifact_dir), precision)
    if graphs_exist(target):
        return target
    log.info("exporting the proposer %s to ONNX (%s) at %s (once)", artifact_dir, precision, target)
    if precision == "fp32":
        return export_onnx(artifact_dir, target)
    return quantize_onnx(ensure_onnx(artifact_dir), target)


def _export(module: nn.Module, inputs: dict[str, torch.Tensor], names: tuple[str, ...], outputs: list[str],
            target: Path) -> None:  # fmt: skip
    dynamic = tuple({axis: torch.export.Dim.AUTO for axis in DYNAMIC_AXES[name]} for name in names)
    torch.onnx.export(
        module,
        tuple(inputs[name] for name in names),
        str(target),
        input_names=list(names),
        output_names=outputs,
        dynamic_shapes=(dynamic,),  # forward(*inputs): one variadic argument
        opset_version=OPSET,
        dynamo=True,
        external_data=False,  # self-contained files to mount or bake into an image
        verbose=False,
    )


def export_onnx(artifact_dir: str | Path, out: Path | None = None) -> Path:
    """Writes the document graph at ``out`` and the pair graph beside it; returns ``out``."""
    model, config = load_artifact(artifact_dir)
    featurizer = DocumentFeaturizer(
        tokenizer_file(config.encoder), config.window_length, config.window_stride, config.entity_types
    )
    features = featurizer.featurize(_example_document())
    inputs = torch_inputs(features)
    target = out or onnx_path(artifact_dir, config)
    target.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        document = model.encode_document(*(inputs[name] for name in DOCUMENT_INPUT_NAMES))
    inputs.update(zip(DOCUMENT_OUTPUT_NAMES, document, strict=True))
    outputs = list(OUTPUT_NAMES if model.relation_classifier is not None else OUTPUT_NAMES[:1])
    _export(DocumentGraph(model).eval(), inputs, DOCUMENT_INPUT_NAMES, list(DOCUMENT_OUTPUT_NAMES), target)
    _export(PairGraph(model).eval(), inputs, PAIR_INPUT_NAMES, outputs, pair_graph_path(target))
    return target


def down_projections(document_graph: Path) -> list[str]:
    """The encoder's feed-forward output projections (a weight matrix with more inputs than
    outputs): their inputs, GELU outputs, carry a few channels far larger than the rest, which
    one int8 scale per tensor cannot hold (quantized, validation F1 fell from 0.653 to 0.574)."""
    import onnx

    model = onnx.load(str(document_graph), load_external_data=False)
    weights = {tensor.name: tuple(tensor.dims) for tensor in model.graph.initializer}
    names = []
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in weights or len(weights[node.input[1]]) != 2:
            continue
        inputs, outputs = weights[node.input[1]]
        if inputs > outputs:
            names.append(node.name)
    return names


def quantize_onnx(document_graph: Path, out: Path) -> Path:
    """The int8 export of fp32 graphs: weights int8 per output channel, activations quantized per
    run (dynamic quantization). Products of two activations (attention scores, context pooling)
    and the encoder's feed-forward output projections (:func:`down_projections`) stay fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    kept = {document_graph: down_projections(document_graph), pair_graph_path(document_graph): []}
    for source, target in ((document_graph, out), (pair_graph_path(document_graph), pair_graph_path(out))):
        quantize_dynamic(
            source,
            target,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul", "Gemm"],
            nodes_to_exclude=kept[source],
            extra_options={"MatMulConstBOnly": True},
        )
    return out
