"""The import graph of the package: layers import downward only, nothing imports in a
circle, the models and quantizers know nothing of persistence or the Hub, the runners in
models/runtime know no network or layer kind, and no module imports another's private
name. Every import counts, at the top of a module or inside a function. docs/design.md
describes these tables."""

import ast
from pathlib import Path

import pytest

import mmdtok

ROOT = Path(mmdtok.__file__).parent

# Each module's layer (DESIGN.md): a module may import its own layer or lower ones.
LAYERS = {
    0: ["version", "atomic", "paths", "configuration", "distributed", "patterns", "audio",
        "tokens", "hub", "limits", "locks"],
    1: ["quantizers"],
    2: ["losses", "metrics"],
    3: ["models", "convert", "streaming", "export"],
    4: ["persistence"],
    5: ["folders", "inspection", "testing", "train", "evaluation"],
    6: ["cli", "__main__", ""],  # "" is the package itself (mmdtok/__init__.py)
}
RANK = {name: rank for rank, names in LAYERS.items() for name in names}

# Inside mmdtok.models (docs/design.md): the layer protocol; the layer kinds (one file
# each) and the stack that runs them; the networks built of them; the codec; the runners
# over a codec. The same rule: a module imports its own rank or lower ones.
MODEL_LAYERS = {
    0: ["runtime.layer", "runtime.kernels"],
    1: ["layers", "runtime.stack"],
    2: ["seanet", "dac", "istft", "discriminator"],
    3: ["config", "presets", "codec"],
    4: ["runtime.chunked", "runtime.streaming", "runtime.export"],
    5: [""],  # mmdtok/models/__init__.py
}
MODEL_RANK = {name: rank for rank, names in MODEL_LAYERS.items() for name in names}
# what a runner may not import: a runner is generic over the protocol of runtime.layer
NETWORKS = ("mmdtok.models.layers", "mmdtok.models.seanet", "mmdtok.models.dac",
            "mmdtok.models.istft")


def _module_name(path: Path) -> str:
    parts = ["mmdtok", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _imports(name: str, path: Path) -> set[str]:
    """The mmdtok modules ``name`` imports anywhere in its file (``from mmdtok.x import
    y`` counts as ``mmdtok.x.y`` when that is a module, else as ``mmdtok.x``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                       for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t == "mmdtok" or t.startswith("mmdtok.")}
    found.discard(name)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> int:
    top = module.removeprefix("mmdtok").removeprefix(".").split(".")[0]
    if top not in RANK:
        pytest.fail(f"{module} belongs to no layer: add it to LAYERS")
    return RANK[top]


def test_the_graph_sees_lazy_imports_inside_functions():
    # cli imports persistence only inside its commands; the graph must see it
    assert "mmdtok.persistence" in GRAPH["mmdtok.cli"]
    assert "mmdtok.quantizers.latent_norm" in GRAPH["mmdtok.quantizers.residual"]


def test_every_import_goes_to_the_same_or_a_lower_layer():
    upward = [f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
              for a, targets in GRAPH.items() for b in targets if _layer(b) > _layer(a)]
    assert not upward, "\n".join(upward)


def test_models_and_quantizers_never_import_persistence_or_the_hub():
    forbidden = {"mmdtok.persistence", "mmdtok.hub"}
    for name, targets in GRAPH.items():
        if name.startswith(("mmdtok.models", "mmdtok.quantizers")):
            reached, todo = set(), list(targets)
            while todo:  # everything the module reaches, through any chain of imports
                module = todo.pop()
                if module not in reached:
                    reached.add(module)
                    todo += GRAPH.get(module, ())
            assert not reached & forbidden, f"{name} reaches {sorted(reached & forbidden)}"


def test_no_module_imports_in_a_circle():
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        if state.get(module) == "done":
            return
        if state.get(module) == "open":
            cycle = trail[trail.index(module):] + [module]
            pytest.fail("import circle: " + " -> ".join(cycle))
        state[module] = "open"
        for target in sorted(GRAPH.get(module, ())):
            visit(target, [*trail, module])
        state[module] = "done"

    for module in sorted(GRAPH):
        visit(module, [])


def _model_rank(module: str) -> int:
    inner = module.removeprefix("mmdtok.models").removeprefix(".")
    for name in sorted(MODEL_RANK, key=len, reverse=True):  # the longest prefix names it
        if inner == name or inner.startswith(f"{name}.") or (name == "" and inner == ""):
            return MODEL_RANK[name]
    pytest.fail(f"{module} belongs to no layer of mmdtok.models: add it to MODEL_LAYERS")


def test_inside_models_every_import_goes_to_the_same_or_a_lower_rank():
    models = {n: {t for t in targets if t.startswith("mmdtok.models")}
              for n, targets in GRAPH.items() if n.startswith("mmdtok.models")}
    upward = [f"{a} (rank {_model_rank(a)}) imports {b} (rank {_model_rank(b)})"
              for a, targets in models.items() for b in targets
              if _model_rank(b) > _model_rank(a)]
    assert not upward, "\n".join(upward)


def test_the_runners_import_no_network_and_no_layer_kind():
    for name, targets in GRAPH.items():
        if name.startswith("mmdtok.models.runtime"):
            known = sorted(t for t in targets if t.startswith(NETWORKS))
            assert not known, f"{name} imports {known}: runners know only runtime.layer"


def _private_imports(name: str, path: Path) -> list[str]:
    """``from mmdtok.x import _y`` in ``name`` where mmdtok.x is another module (a
    dunder such as __version__ is public)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = node.module or ""
        if node.level:
            anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            base = f"{anchor}.{base}" if base else anchor
        if base != "mmdtok" and not base.startswith("mmdtok."):
            continue
        found += [f"{name} imports {alias.name} from {base}" for alias in node.names
                  if alias.name.startswith("_") and not alias.name.endswith("__")
                  and base != name]
    return found


def test_the_private_import_check_sees_one(tmp_path):
    module = tmp_path / "probe.py"
    module.write_text("def f():\n    from mmdtok.models.seanet import _hidden\n"
                      "from mmdtok.version import __version__\n")
    assert _private_imports("mmdtok.probe", module) == [
        "mmdtok.probe imports _hidden from mmdtok.models.seanet"]


def test_no_module_imports_a_private_name_from_another():
    found = [line for name, path in MODULES.items() for line in _private_imports(name, path)]
    assert not found, "\n".join(found)
