"""The package's layering, checked on every module it has (walked, not listed).

Each module is imported (so a module nobody imports cannot hide a broken or upward import) and its imports are read
from its source, those inside functions included: a lazy import is still an arrow. The rules are the architecture in
docs/development.md#layout; a new package must be given its place here before the test passes.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import diarization

AWS_LIBRARIES = ("boto3", "botocore", "aws_lambda_powertools", "awslambdaric")

LAYERS: dict[str, set[str]] = {
    # layer: the layers it may import (its own always)
    "errors": set(),
    "core": {"errors"},
    "outputs": {"core", "errors"},
    "fanout": {"core", "errors"},
    "modelmaking": {"core", "errors"},
    "service": {"core", "outputs", "fanout", "errors"},
    "aws_ports": {"core", "outputs", "service", "errors"},
    "cli": {"core", "outputs", "service", "aws_ports", "errors", "version"},
    "sagemaker": {"core", "outputs", "fanout", "service", "aws_ports", "errors"},
    "aws": {"core", "outputs", "fanout", "service", "aws_ports", "errors"},
    "entry": {"aws", "sagemaker", "cli", "errors"},
    "version": set(),
}
"""Arrows point down only: the core knows no adapter, the use cases know no host and no AWS implementation, the AWS
implementations know no host, and no two layers import each other."""

MAY_USE_AWS = {"aws", "aws_ports", "cli", "sagemaker", "entry"}
"""Where boto3 and Powertools may appear. The CLI reads and writes s3:// through aws_ports; the server imports the S3
port. The core, outputs, fan-out maths, use cases and model-making never touch an AWS library."""

ENTRY_MODULES = {"diarization.handler", "diarization.entrypoint", "diarization.__main__"}


def layer_of(module: str) -> str:
    if module in ENTRY_MODULES:
        return "entry"
    if module == "diarization":
        return "version"
    parts = module.split(".")
    if parts[1] in LAYERS:
        return parts[1]
    raise AssertionError(f"{module} belongs to no layer: give its package a place in LAYERS")


def modules() -> Iterator[str]:
    yield "diarization"
    for info in pkgutil.walk_packages(diarization.__path__, "diarization."):
        yield info.name


ALL = sorted(modules())


def source_of(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, module
    return Path(spec.origin)


def imports_of(module: str) -> set[str]:
    """Every module named by an import statement anywhere in the module (top level and inside functions)."""
    tree = ast.parse(source_of(module).read_text())
    package = module if source_of(module).name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: climb from the module's package
                parents = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parents, base] if base else parents)
            found.add(base)
            # `from diarization.x import y` may name a submodule y: count it as an import of that module too
            found.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in ALL)
    return found


def test_the_walk_finds_every_package() -> None:
    packages = {name.split(".")[1] for name in ALL if name.count(".") >= 1}
    assert {"core", "outputs", "service", "aws", "aws_ports", "cli", "modelmaking", "fanout", "sagemaker"} <= packages
    assert len(ALL) > 60


RUNS_ON_IMPORT = {"diarization.__main__", "diarization.handler"}
"""Importing these runs the CLI or Lambda's init (the model load): the runtime and CLI tests import them for real."""


@pytest.mark.parametrize("module", [m for m in ALL if m not in RUNS_ON_IMPORT])
def test_every_module_imports(module: str) -> None:
    importlib.import_module(module)


@pytest.mark.parametrize("module", ALL)
def test_imports_point_down(module: str) -> None:
    layer = layer_of(module)
    allowed = LAYERS[layer] | {layer}
    wrong = sorted(
        name
        for name in imports_of(module)
        if name.startswith("diarization.") and name in ALL and layer_of(name) not in allowed
    )
    assert not wrong, f"{module} ({layer}) imports {wrong}; {layer} may import only {sorted(allowed)}"


@pytest.mark.parametrize("module", ALL)
def test_aws_libraries_stay_in_the_adapters(module: str) -> None:
    if layer_of(module) in MAY_USE_AWS:
        return
    used = sorted(name for name in imports_of(module) if name.split(".")[0] in AWS_LIBRARIES)
    assert not used, f"{module} ({layer_of(module)}) imports {used}"


def test_no_import_circles() -> None:
    """Between modules (lazy imports included) and between layers."""
    graph = {module: {name for name in imports_of(module) if name in ALL and name != module} for module in ALL}
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])
    layers = {layer_of(m): set[str]() for m in ALL}
    for module, targets in graph.items():
        layers[layer_of(module)].update(layer_of(t) for t in targets if layer_of(t) != layer_of(module))
    cycle = find_cycle(layers)
    assert cycle is None, "layer circle: " + " -> ".join(cycle or [])


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
