"""LoRA fine-tuning of the classifier LLM (the paper's RC tuning), in PEFT's adapter format.

Instruction data: for each train document, its gold relation pairs (answer: their relation
names) plus a share of the no-relation pairs the proposer passes (answer: ``none``), so that the
model sees the kind of negatives it meets behind the proposer.

Training reuses the prompt layout: all pairs of a document share the document prefix, so the
prefix is run once without gradient and its key/value cache is shared by a batch of that
document's pairs, which run with gradient (loss on the answer tokens only). Gradients thus reach
LoRA through the pair and answer positions, not through the prefix's keys and values, which cuts
the cost per pair about ten-fold on CPU. With ``--full-backprop`` every example runs as one
sequence (the usual recipe; use it on a GPU).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from lmrc import docred
from lmrc.classifier.artifact import ClassifierConfig, save_config
from lmrc.classifier.prompt import PROMPT_VERSION, LabelSet, build_prompt, docred_labels, format_answer
from lmrc.classifier.training.base_model import BASE_MODEL_ID, materialize
from lmrc.contracts import DocumentEvent
from lmrc.proposer.training.candidates import proposer_candidates

log = logging.getLogger(__name__)

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class TrainOptions:
    out: Path
    version: str = "rc-smollm2-135m-lora-v1"
    base_model: Path | None = None
    base_model_id: str = BASE_MODEL_ID
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    lr: float = 5e-4
    warmup: float = 0.05
    epochs: int = 1
    batch_pairs: int = 16
    max_docs: int | None = 130
    positives_per_doc: int = 10
    negatives_per_doc: int = 4
    max_minutes: float | None = 30
    full_backprop: bool = False
    device: str = "cpu"
    seed: int = 13
    threads: int | None = None


@dataclass
class PairExample:
    head: int
    tail: int
    answer: str


@dataclass
class DocumentExamples:
    document: DocumentEvent
    pairs: list[PairExample] = field(default_factory=list)


def proposer_negatives(documents: list[dict[str, Any]]) -> dict[str, list[tuple[int, int]]]:
    """Pairs the shipped proposer passes that hold no gold relation, per document title."""
    candidates = proposer_candidates(documents)
    for raw in documents:
        gold = docred.gold_pairs(raw)
        candidates[raw["title"]] = [pair for pair in candidates[raw["title"]] if pair not in gold]
    return candidates


def build_examples(
    documents: list[dict[str, Any]],
    negatives: dict[str, list[tuple[int, int]]],
    labels: LabelSet,
    options: TrainOptions,
    rng: random.Random,
) -> list[DocumentExamples]:
    examples = []
    for raw in documents:
        relations = {
            pair: {labels.names[r] for r in found} for pair, found in docred.relations_by_pair(raw).items()
        }
        positives = sorted(relations)
        rng.shuffle(positives)
        pairs = [
            PairExample(h, t, format_answer(sorted(relations[(h, t)]), labels))
            for h, t in positives[: options.positives_per_doc]
        ]
        pool = list(negatives.get(raw["title"], []))
        rng.shuffle(pool)
        pairs += [PairExample(h, t, format_answer([], labels)) for h, t in pool[: options.negatives_per_doc]]
        rng.shuffle(pairs)
        if pairs:
            examples.append(DocumentExamples(docred.to_document_event(raw), pairs))
    return examples


class PairBatcher:
    """Token ids for one document's pairs: the shared prefix, and per pair the rest + answer."""

    def __init__(self, tokenizer: Any, labels: LabelSet) -> None:
        self.tokenizer = tokenizer
        self.labels = labels
        self.eos = tokenizer.eos_token_id

    def encode(self, doc: DocumentExamples) -> tuple[list[int], list[tuple[list[int], list[int]]]]:
        prompts = [
            self.tokenizer(build_prompt(doc.document, p.head, p.tail, self.labels))["input_ids"]
            for p in doc.pairs
        ]
        shared = _common_prefix_length(prompts)
        # Keep at least one prompt token per pair, so each pair's first answer token has a query.
        shared = min(shared, min(len(p) for p in prompts) - 1)
        pairs = []
        for prompt, pair in zip(prompts, doc.pairs, strict=True):
            answer = self.tokenizer(pair.answer, add_special_tokens=False)["input_ids"] + [self.eos]
            pairs.append((prompt[shared:], answer))
        return prompts[0][:shared], pairs


def _common_prefix_length(sequences: list[list[int]]) -> int:
    first = sequences[0]
    length = min(len(s) for s in sequences)
    for i in range(length):
        if any(s[i] != first[i] for s in sequences):
            return i
    return length


def _suffix_batch(
    pairs: list[tuple[list[int], list[int]]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded input ids, attention mask over the suffix, labels (-100 off the answer)."""
    width = max(len(q) + len(a) for q, a in pairs)
    ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    labels = torch.full((len(pairs), width), -100, dtype=torch.long)
    for row, (question, answer) in enumerate(pairs):
        sequence = question + answer
        ids[row, : len(sequence)] = torch.tensor(sequence)
        mask[row, : len(sequence)] = 1
        labels[row, len(question) : len(sequence)] = torch.tensor(answer)
    return ids, mask, labels


def batch_loss(
    model: Any,
    prefix: list[int],
    pairs: list[tuple[list[int], list[int]]],
    pad_id: int,
    device: str,
    full_backprop: bool,
) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens of a batch of one document's pairs."""
    from transformers.cache_utils import DynamicCache

    if full_backprop:
        ids, mask, labels = _suffix_batch([(prefix + q, a) for q, a in pairs], pad_id)
        return model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
    with torch.no_grad():
        cache = model(input_ids=torch.tensor([prefix], device=device), use_cache=True).cache
    size = len(pairs)
    shared = DynamicCache(
        ddp_cache_data=[
            (
                layer.keys.expand(size, -1, -1, -1).contiguous(),
                layer.values.expand(size, -1, -1, -1).contiguous(),
            )
            for layer in cache.layers
        ],
        config=model.config,
    )
    ids, mask, labels = _suffix_batch(pairs, pad_id)
    attention = torch.cat([torch.ones((size, len(prefix)), dtype=torch.long), mask], dim=1)
    positions = torch.arange(len(prefix), len(prefix) + ids.shape[1]).unsqueeze(0).expand(size, -1)
    output = model(
        input_ids=ids.to(device),
        attention_mask=attention.to(device),
        position_ids=positions.to(device),
        cache=shared,
        labels=labels.to(device),
    )
    return output.loss


def _batches(doc_examples: list[DocumentExamples], batch_pairs: int) -> Iterator[DocumentExamples]:
    for doc in doc_examples:
        for start in range(0, len(doc.pairs), batch_pairs):
            yield DocumentExamples(doc.document, doc.pairs[start : start + batch_pairs])


def train(options: TrainOptions) -> ClassifierConfig:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rng = random.Random(options.seed)
    torch.manual_seed(options.seed)
    if options.threads:
        torch.set_num_threads(options.threads)
    labels = docred_labels()
    base_dir = materialize(options.base_model)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).to(options.device)
    model = get_peft_model(
        model,
        LoraConfig(
            r=options.rank,
            lora_alpha=options.alpha,
            lora_dropout=options.dropout,
            target_modules=LORA_TARGETS,
            task_type="CAUSAL_LM",
        ),
    )
    documents = docred.load_split("train")
    rng.shuffle(documents)
    documents = documents[: options.max_docs] if options.max_docs else documents
    examples = build_examples(documents, proposer_negatives(documents), labels, options, rng)
    batcher = PairBatcher(tokenizer, labels)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else batcher.eos
    steps = options.epochs * sum(math.ceil(len(d.pairs) / options.batch_pairs) for d in examples)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=options.lr)
    warmup = max(1, int(steps * options.warmup))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup)))
    )
    options.out.mkdir(parents=True, exist_ok=True)
    log_path = options.out / "train_log.jsonl"
    started = time.monotonic()
    step = 0
    stopped_early = False
    with open(log_path, "w", encoding="utf-8") as log_file:
        for epoch in range(1, options.epochs + 1):
            model.train()
            rng.shuffle(examples)
            progress = tqdm(
                _batches(examples, options.batch_pairs), total=steps // options.epochs, unit="batch"
            )
            progress.set_description(f"epoch {epoch}/{options.epochs}")
            for batch in progress:
                prefix, pairs = batcher.encode(batch)
                loss = batch_loss(model, prefix, pairs, pad_id, options.device, options.full_backprop)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                step += 1
                record = {
                    "epoch": epoch,
                    "step": step,
                    "loss": round(loss.item(), 4),
                    "lr": scheduler.get_last_lr()[0],
                    "pairs": len(pairs),
                    "elapsed_s": round(time.monotonic() - started, 1),
                }
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                progress.set_postfix(loss=f"{loss.item():.3f}")
                if options.max_minutes and time.monotonic() - started > options.max_minutes * 60:
                    stopped_early = True
                    break
            if stopped_early:
                break
    model.peft_config["default"].base_model_name_or_path = options.base_model_id  # not a local path
    model.save_pretrained(options.out)
    (options.out / "README.md").unlink(missing_ok=True)  # PEFT's empty model-card template
    config = ClassifierConfig(
        version=options.version,
        prompt_version=PROMPT_VERSION,
        base_model=options.base_model_id,
        training={
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items() if k != "out"},
            "documents": len(examples),
            "pairs": sum(len(d.pairs) for d in examples),
            "steps": step,
            "minutes": round((time.monotonic() - started) / 60, 1),
            "stopped_at_time_limit": stopped_early,
        },
    )
    save_config(config, options.out)
    return config


def merge(adapter_dir: Path, out: Path, base_model: Path | None = None) -> Path:
    """Base model with the adapter folded in, as one checkpoint (for servers without LoRA)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir = materialize(base_model)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    return out
