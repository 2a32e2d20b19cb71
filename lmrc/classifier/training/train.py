"""LoRA fine-tuning of the classifier LLM (the paper's RC tuning) on prompt v2, in PEFT's format.

Instruction data: every candidate pair of every train document as the proposer passes it, with
its shortlist as the lettered options; the answer is the letters of the options that are gold
relations of the pair, or ``none`` (proposer false positives, or gold relations the shortlist
missed). The shortlists are out-of-fold (``lmrc proposer train --fold i``): each train document's
candidates come from a proposer that never trained on it, so the options and their probabilities
look as they will behind the shipped proposer on new documents.

All pairs of a document share the document prefix: it runs once per batch of that document's
pairs and its key/value cache is shared by the batch (loss on the answer tokens only). On a GPU
the prefix runs with gradient (``prefix_gradient``: exact, the usual recipe at a fraction of the
cost); on CPU without, so that gradients reach LoRA through the pair and answer positions only,
which cuts the cost per pair about ten-fold.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from lmrc import docred
from lmrc.classifier.artifact import ClassifierConfig, save_config
from lmrc.classifier.prompt import (
    PROMPT_VERSION,
    LabelSet,
    Option,
    build_prompt,
    docred_labels,
    format_answer,
)
from lmrc.classifier.training.base_model import BASE_MODEL_ID, materialize
from lmrc.contracts import DocumentEvent
from lmrc.proposer.training.candidates import DocumentCandidates, out_of_fold_candidates

log = logging.getLogger(__name__)

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class TrainOptions:
    out: Path
    fold_proposers: tuple[Path, ...] = ()
    version: str = "rc-smollm2-135m-lora-v2"
    base_model: Path | None = None
    base_model_id: str = BASE_MODEL_ID
    shortlist_size: int = 4
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    lr: float = 3e-4
    warmup: float = 0.05
    epochs: int = 2
    batch_pairs: int = 32
    max_docs: int | None = None
    max_minutes: float | None = None
    prefix_gradient: bool = False
    validation_candidates: Path | None = None
    device: str = "cpu"
    seed: int = 13
    threads: int | None = None


@dataclass
class PairExample:
    head: int
    tail: int
    options: list[Option]
    answer: str


@dataclass
class DocumentExamples:
    document: DocumentEvent
    pairs: list[PairExample] = field(default_factory=list)


def options_of(shortlist: Sequence[tuple[str, float]]) -> list[Option]:
    return [Option(relation_id, probability) for relation_id, probability in shortlist]


def build_examples(
    candidates: Sequence[tuple[dict[str, Any], DocumentCandidates]], rng: random.Random
) -> list[DocumentExamples]:
    """One example per candidate pair (with a shortlist): answer = its gold options, or none."""
    examples = []
    for raw, found in candidates:
        gold = docred.relations_by_pair(raw)
        pairs = []
        for pair in found.pairs:
            if not pair.shortlist:
                continue
            relations = gold.get((pair.head, pair.tail), set())
            chosen = [
                index for index, (relation_id, _p) in enumerate(pair.shortlist) if relation_id in relations
            ]
            pairs.append(PairExample(pair.head, pair.tail, options_of(pair.shortlist), format_answer(chosen)))
        rng.shuffle(pairs)
        if pairs:
            examples.append(DocumentExamples(docred.to_document_event(raw), pairs))
    return examples


class PairBatcher:
    """Token ids for one document's pairs: the shared prefix, and per pair the rest (+ answers)."""

    def __init__(self, tokenizer: Any, labels: LabelSet) -> None:
        self.tokenizer = tokenizer
        self.labels = labels
        self.eos = tokenizer.eos_token_id

    def prompts(
        self, document: DocumentEvent, pairs: Sequence[PairExample]
    ) -> tuple[list[int], list[list[int]]]:
        """The common token prefix of the pairs' prompts, and each prompt's remainder."""
        prompts = [
            self.tokenizer(build_prompt(document, p.head, p.tail, p.options, self.labels))["input_ids"]
            for p in pairs
        ]
        shared = _common_prefix_length(prompts)
        # Keep at least one prompt token per pair, so each pair's first answer token has a query.
        shared = min(shared, min(len(p) for p in prompts) - 1)
        return prompts[0][:shared], [prompt[shared:] for prompt in prompts]

    def answer_ids(self, answer: str) -> list[int]:
        return self.tokenizer(answer, add_special_tokens=False)["input_ids"] + [self.eos]

    def encode(self, doc: DocumentExamples) -> tuple[list[int], list[tuple[list[int], list[int]]]]:
        prefix, rests = self.prompts(doc.document, doc.pairs)
        return prefix, [(rest, self.answer_ids(p.answer)) for rest, p in zip(rests, doc.pairs, strict=True)]


def _common_prefix_length(sequences: list[list[int]]) -> int:
    first = sequences[0]
    length = min(len(s) for s in sequences)
    for i in range(length):
        if any(s[i] != first[i] for s in sequences):
            return i
    return length


def _suffix_batch(
    pairs: Sequence[tuple[list[int], list[int]]], pad_id: int
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


def autocast(device: str) -> Any:
    """bf16 autocast on a GPU; nothing on CPU (fp32, as the local server runs)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else nullcontext()


def suffix_forward(
    model: Any,
    prefix: list[int],
    pairs: Sequence[tuple[list[int], list[int]]],
    pad_id: int,
    device: str,
    prefix_gradient: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [pairs, width, vocab] of each pair's rest + answer after the shared prefix, and the
    labels [pairs, width] (-100 off the answer tokens, already shifted to the logit that predicts them)."""
    from transformers.cache_utils import DynamicCache

    with nullcontext() if prefix_gradient else torch.no_grad():
        cache = model(input_ids=torch.tensor([prefix], device=device), use_cache=True).cache
    size = len(pairs)
    shared = DynamicCache(
        ddp_cache_data=[
            (layer.keys.expand(size, -1, -1, -1), layer.values.expand(size, -1, -1, -1))
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
    )
    shifted = torch.full_like(labels, -100)
    shifted[:, :-1] = labels[:, 1:]
    return output.logits, shifted.to(device)


def batch_loss(
    model: Any,
    prefix: list[int],
    pairs: Sequence[tuple[list[int], list[int]]],
    pad_id: int,
    device: str,
    prefix_gradient: bool,
) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens of a batch of one document's pairs."""
    logits, labels = suffix_forward(model, prefix, pairs, pad_id, device, prefix_gradient)
    return torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100
    )


def _batches(doc_examples: list[DocumentExamples], batch_pairs: int) -> Iterator[DocumentExamples]:
    for doc in doc_examples:
        for start in range(0, len(doc.pairs), batch_pairs):
            yield DocumentExamples(doc.document, doc.pairs[start : start + batch_pairs])


def load_base(base_model: Path | None, device: str) -> tuple[Any, Any]:
    """Tokenizer and fp32 base model (the de-quantized SmolLM2 unless ``base_model`` is given)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir = materialize(base_model)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).to(device)
    return tokenizer, model


def train(options: TrainOptions) -> ClassifierConfig:
    from peft import LoraConfig, get_peft_model

    from lmrc.classifier.training.offline import OfflineEvaluation, load_candidates, offline_scores

    if not options.fold_proposers:
        raise ValueError(
            "training needs the fold proposers (lmrc proposer train --fold i), for out-of-fold shortlists"
        )
    rng = random.Random(options.seed)
    torch.manual_seed(options.seed)
    if options.threads:
        torch.set_num_threads(options.threads)
    labels = docred_labels()
    tokenizer, model = load_base(options.base_model, options.device)
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
    candidates = out_of_fold_candidates(options.fold_proposers, options.shortlist_size, options.device)
    rng.shuffle(candidates)
    candidates = candidates[: options.max_docs] if options.max_docs else candidates
    examples = build_examples(candidates, rng)
    validation = load_candidates(options.validation_candidates) if options.validation_candidates else None
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
    epochs: list[dict[str, Any]] = []
    best: tuple[float, int] | None = None
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
                with autocast(options.device):
                    loss = batch_loss(model, prefix, pairs, pad_id, options.device, options.prefix_gradient)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                step += 1
                if step % 10 == 0 or step == 1:
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
            summary: dict[str, Any] = {"epoch": epoch, "elapsed_s": round(time.monotonic() - started, 1)}
            if validation is not None:
                model.eval()
                scores: OfflineEvaluation = offline_scores(
                    model, tokenizer, labels, validation, "validation", options.device
                )
                summary["validation"] = asdict(scores)
                if best is None or scores.llm_f1 > best[0]:
                    best = (scores.llm_f1, epoch)
                    _save_adapter(model, options)
            else:
                _save_adapter(model, options)
            epochs.append(summary)
            log_file.write(json.dumps(summary) + "\n")
            log_file.flush()
            tqdm.write(json.dumps(summary))
            if stopped_early:
                break
    config = ClassifierConfig(
        version=options.version,
        prompt_version=PROMPT_VERSION,
        base_model=options.base_model_id,
        training={
            **{
                k: ([str(p) for p in v] if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
                for k, v in asdict(options).items()
                if k != "out"
            },
            "documents": len(examples),
            "pairs": sum(len(d.pairs) for d in examples),
            "none_answers": sum(p.answer.startswith("none") for d in examples for p in d.pairs),
            "steps": step,
            "minutes": round((time.monotonic() - started) / 60, 1),
            "stopped_at_time_limit": stopped_early,
            "kept_epoch": best[1] if best else len(epochs),
            "epochs_run": epochs,
        },
    )
    save_config(config, options.out)
    return config


def _save_adapter(model: Any, options: TrainOptions) -> None:
    """PEFT's format, weights in fp16 (half the size; loaded into the fp32 base, exact enough)."""
    from safetensors.torch import load_file, save_file

    model.peft_config["default"].base_model_name_or_path = options.base_model_id  # not a local path
    model.save_pretrained(options.out)
    (options.out / "README.md").unlink(missing_ok=True)  # PEFT's empty model-card template
    weights = options.out / "adapter_model.safetensors"
    save_file({k: v.half().contiguous() for k, v in load_file(weights).items()}, weights)


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
