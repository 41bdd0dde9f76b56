"""The package's shape: no import cycle, pure cores free of Keras and MLflow, MLflow in its two modules,
infrastructure imported only where asked for."""

from __future__ import annotations

import ast
from pathlib import Path

import searchlab

PACKAGE = Path(searchlab.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(top_level_only: bool = False) -> dict[str, set[str]]:
    """searchlab module -> the searchlab modules it imports (at module level only, if asked)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        nodes = tree.body if top_level_only else list(ast.walk(tree))
        found: set[str] = set()
        for node in nodes:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("searchlab"):
                submodules = {f"{node.module}.{alias.name}" for alias in node.names} & set(modules)
                found |= submodules
                if len(submodules) < len(node.names):  # names defined by the module itself, not its submodules
                    found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names if alias.name.startswith("searchlab")}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _third_party(path: Path, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
    return names


def test_no_import_cycle() -> None:
    """Every import, function-level ones included, goes one way: a depth-first search finds no back edge."""
    graph = import_graph()
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            assert state.get(target) != "open", "import cycle: " + " -> ".join([*path, module, target])
            if target not in state:
                visit(target, [*path, module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_pure_cores_import_neither_keras_nor_mlflow() -> None:
    heavy = {"keras", "tensorflow", "keras_tuner", "mlflow"}
    for module in ("space", "narrow", "config", "metrics", "errors", "callbacks", "console", "plots"):
        assert not _third_party(PACKAGE / f"{module}.py") & heavy, module
    # Keras' own data set downloaders load it when those data sets are asked for; the rest of data.py does not.
    assert not _third_party(PACKAGE / "data.py", top_level_only=True) & heavy


def test_mlflow_is_imported_by_the_tracking_modules_only() -> None:
    users = {_module_name(p) for p in PACKAGE.rglob("*.py") if "mlflow" in _third_party(p)}
    assert users == {"searchlab.tracking", "searchlab.registry"}


def test_stages_and_pipeline_import_infrastructure_only_when_asked() -> None:
    """The Dask cluster and KerasTuner's gRPC chief load only for a search that uses them."""
    top = import_graph(top_level_only=True)
    for module in ("searchlab.pipeline", "searchlab.coarse", "searchlab.fine", "searchlab.cli"):
        assert not top[module] & {"searchlab.infra.dask_cluster", "searchlab.infra.tuner_workers"}, module
    assert "grpc" not in _third_party(PACKAGE / "pipeline.py")
