"""``lmrc up``: the pipeline as it runs in production, on this machine, until Ctrl-C.

A Kafka-protocol broker, the local TGI-compatible model server (not with ``--encoder-only``) and
the four services as processes of their own (``python -m lmrc.<stage>``, the containers' entry
points), on the pipeline's own topics: publish with ``lmrc publish``, subscribe with ``lmrc tail``,
scrape each service's ``/metrics``. Everything it started stops with it (Ctrl-C or SIGTERM), and
the embedded graph is its own while it runs (``<graph>.lock``): a second ``lmrc up`` or an
``lmrc run`` on the same graph is refused in one line.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from lmrc.bundle import DEFAULT_BUNDLE, Bundle, load_bundle
from lmrc.classifier.artifact import served_adapter_id
from lmrc.local.broker import LocalBroker
from lmrc.local.graph_lock import graph_lock
from lmrc.local.llm.local_server import LocalTgiServer
from lmrc.local.pipeline import quiet_export
from lmrc.local.processes import free_port
from lmrc.local.run import interrupt_on_signals
from lmrc.paths import REPO_ROOT
from lmrc.topology import TOPICS

#: How long the services may take to join their groups (the first start exports ONNX models).
READY_TIMEOUT_SECONDS = 240.0


class UpError(RuntimeError):
    """``lmrc up`` cannot start or a part of it stopped; the message says which."""


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _environment(
    stage: str,
    bootstrap: str,
    port: int,
    graph: Path,
    tgi_url: str,
    adapter: str | None,
    encoder_only: bool,
) -> dict[str, str]:
    prefix = stage.upper()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        f"{prefix}_CREATE_TOPICS": "true",
        f"{prefix}_HTTP_PORT": str(port),
        f"{prefix}_HTTP_HOST": "127.0.0.1",
    }
    if stage == "proposer" and encoder_only:
        env.update(PROPOSER_MODE="encoder_only", PROPOSER_OUTPUT_TOPIC=TOPICS.relations)
    if stage == "classifier":
        env.update(CLASSIFIER_TGI_URL=tgi_url)
        if adapter is not None:  # else the base model as it is (a zero- or few-shot classifier)
            env.update(CLASSIFIER_TGI_ADAPTER_ID=adapter)
    if stage == "sink":
        env.update(SINK_STORE_BACKEND="ladybug", SINK_LADYBUG_PATH=str(graph))
    return env


def _prepare_models(bundle: Bundle) -> None:
    """The ONNX exports the services serve, made once here (a service does not export)."""
    from lmrc.annotator.training.export import ensure_tagger_onnx
    from lmrc.proposer.service import ProposerSettings
    from lmrc.proposer.training.export import ensure_onnx

    with quiet_export():
        ensure_tagger_onnx(bundle.require("annotator"))
        ensure_onnx(bundle.require("proposer"), precision=ProposerSettings().chosen_precision())


def up(broker_port: int, graph: Path, encoder_only: bool, models: Path | None = None) -> int:
    """Start everything, say where it is, wait for Ctrl-C or SIGTERM, stop everything: 0; 1 when a
    part stopped on its own (its log's last lines are shown)."""
    stages = ["annotator", "proposer", *([] if encoder_only else ["classifier"]), "sink"]
    logs = REPO_ROOT / "var" / "log" / "up"
    logs.mkdir(parents=True, exist_ok=True)
    with graph_lock(graph, exclusive=True), interrupt_on_signals(), contextlib.ExitStack() as stack:
        print("preparing the models (ONNX exports, once)", flush=True)
        bundle = load_bundle(models or DEFAULT_BUNDLE)
        _prepare_models(bundle)
        broker = LocalBroker(port=broker_port, log_path=logs / "broker.log")
        stack.callback(broker.stop)
        broker.start()
        tgi_url, adapter = "", served_adapter_id(bundle.classifier_dir)
        if not encoder_only:
            print("starting the model server (the first start de-quantizes the LLM, ~20 s)", flush=True)
            tgi = LocalTgiServer.for_classifier(bundle.classifier_dir, adapter, log_path=logs / "tgi.log")
            stack.callback(tgi.stop)
            tgi.start()
            tgi_url = tgi.url
        services: dict[str, tuple[subprocess.Popen[bytes], int, Path]] = {}
        stack.callback(_stop_services, services)
        for stage in stages:
            port = free_port()
            log = logs / f"{stage}.log"
            env = _environment(stage, broker.bootstrap_servers, port, graph, tgi_url, adapter, encoder_only)
            if models is not None and stage != "sink":
                env[f"{stage.upper()}_MODELS"] = str(models.resolve())
            with open(log, "wb") as handle:
                process = subprocess.Popen(
                    [sys.executable, "-m", f"lmrc.{stage}"],
                    env={**os.environ, **env},
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches us; we stop them in order
                )
            services[stage] = (process, port, log)
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        try:
            while not all(_ready(port) for _process, port, _log in services.values()):
                _check_alive(services)
                if time.monotonic() > deadline:
                    raise UpError(f"the services were not ready in {READY_TIMEOUT_SECONDS:.0f} s ({logs})")
                time.sleep(0.5)
            _say_where(broker.bootstrap_servers, tgi_url, services, graph, logs)
            while True:
                _check_alive(services)
                time.sleep(0.5)
        except KeyboardInterrupt:
            print("stopping: the services, the model server and the broker", flush=True)
            return 0


def _check_alive(services: dict[str, tuple[subprocess.Popen[bytes], int, Path]]) -> None:
    for stage, (process, _port, log) in services.items():
        if process.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise UpError(
                f"the {stage} stopped (exit status {process.returncode}); the last lines of {log}:\n"
                + "\n".join(tail)
            )


def _stop_services(services: dict[str, tuple[subprocess.Popen[bytes], int, Path]]) -> None:
    """SIGTERM (each finishes its batch, commits, leaves its group), then SIGKILL after 15 s."""
    for process, _port, _log in services.values():
        if process.poll() is None:
            process.terminate()
    for process, _port, _log in services.values():
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _say_where(
    bootstrap: str,
    tgi_url: str,
    services: dict[str, tuple[subprocess.Popen[bytes], int, Path]],
    graph: Path,
    logs: Path,
) -> None:
    lmrc = f"{Path(sys.executable).parent / 'lmrc'}"
    print(f"broker (Tansu, in memory) on {bootstrap}" + (f"; model server on {tgi_url}" if tgi_url else ""))
    for stage, (_process, port, _log) in services.items():
        print(f"  {stage}: metrics on http://127.0.0.1:{port}/metrics")
    print(f"graph: {graph} (LadybugDB, written by the sink; `lmrc graph` reads it once lmrc up stops)")
    print(f"logs: {logs}")
    print("ready. In another terminal:")
    print(f"  {lmrc} publish --bootstrap-servers {bootstrap} --text docs/examples/apache-kafka.txt")
    print(f"  {lmrc} tail --bootstrap-servers {bootstrap} --topic {TOPICS.relations} --from-beginning")
    print("Ctrl-C stops everything", flush=True)
