"""The import rules of the one import root, checked from the code's own imports.

Layers, bottom up: contracts, paths, checkpoints (training state), weights (trained weights'
int4-delta storage), bundle (the model bundle's format), topology, docred, runtime, the stages,
local, cli. Arrows point down only. A stage's serving modules (everything outside its
``training/``) never import training code, ``docred``, ``local`` or ``cli``; the local
TGI-compatible server speaks the contracts and imports no stage's serving code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from lmrc.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "lmrc"
LAYERS = (
    "contracts",
    "paths",
    "checkpoints",
    "weights",
    "bundle",
    "topology",
    "docred",
    "runtime",
    "stages",
    "local",
    "cli",
)
STAGES = ("annotator", "proposer", "classifier", "sink")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every lmrc module a file imports, at module level or inside functions."""
    found: set[str] = set()
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "lmrc" or name.startswith("lmrc.")}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    top = parts[1]
    if top in STAGES:
        return "stages"
    return top if top in LAYERS else None


def is_training(module: str) -> bool:
    parts = module.split(".")
    return len(parts) > 2 and parts[1] in STAGES and parts[2] == "training"


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_the_rules_see_every_package_of_the_root() -> None:
    tops = {module_name(path).split(".")[1] for path in SOURCES if "." in module_name(path)}
    assert tops - {"__main__"} <= {*LAYERS, *STAGES}, "a new top-level package needs a layer"
    assert {"contracts", "runtime", "local", "cli", *STAGES} <= tops


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_imports_point_down(path: Path) -> None:
    module = module_name(path)
    layer = layer_of(module)
    if layer is None:
        return
    rank = LAYERS.index(layer)
    for target in imports_of(path):
        target_layer = layer_of(target)
        if target_layer is None:
            continue
        assert LAYERS.index(target_layer) <= rank, f"{module} ({layer}) imports {target} ({target_layer})"


@pytest.mark.parametrize(
    "path",
    [p for p in SOURCES if layer_of(module_name(p)) == "stages" and not is_training(module_name(p))],
    ids=lambda p: str(p.relative_to(REPO_ROOT)),
)
def test_serving_code_imports_no_training_docred_local_or_cli(path: Path) -> None:
    module = module_name(path)
    stage = module.split(".")[1]
    for target in imports_of(path):
        assert not is_training(target), f"{module} (serving) imports training code {target}"
        assert layer_of(target) not in ("docred", "local", "cli"), f"{module} (serving) imports {target}"
        target_stage = target.split(".")[1] if layer_of(target) == "stages" else stage
        assert target_stage == stage, f"{module} imports another stage's serving code: {target}"


def test_the_local_model_server_speaks_the_contracts_not_the_classifier() -> None:
    for path in sorted((PACKAGE / "local" / "llm").rglob("*.py")):
        if path.name in ("__main__.py", "local_server.py"):
            continue
        for target in imports_of(path):
            assert layer_of(target) != "stages" or is_training(target), f"{path.name} imports {target}"


def test_the_checker_catches_an_upward_import(tmp_path: Path) -> None:
    """The rule can fail: a runtime module that imported the CLI would be reported."""
    bad = PACKAGE / "runtime" / "_layer_probe.py"
    bad.write_text("from lmrc.cli import main\n", encoding="utf-8")
    try:
        with pytest.raises(AssertionError, match=r"imports lmrc\.cli"):
            test_imports_point_down(bad)
    finally:
        bad.unlink()
