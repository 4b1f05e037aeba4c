"""quadkeras' dependency order, from the import statements themselves (`ast`, no import):

backend -> utils -> layers -> quantizers -> quantize/optimizers -> models -> summary/report -> data ->
training -> bsq/export/interop/autobuilder/quadratize -> cli (a module may import its own level or a lower
one; the package top, `quadkeras/__init__`, stands at the apps' level), checked on the whole
graph, function-local imports included; no import cycles (function-local imports included);
no function-local imports of quadkeras modules but those of modules that import an optional
heavy dependency (torch) at their top; and `import quadkeras.layers` / `import quadkeras` load
no training, data, export or BSQ conversion code. The only function-local imports allowed are
listed in OPTIONAL_LOCAL with the reason; the test fails when an entry is no longer needed."""

import ast
import collections
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "quadkeras"
ORDER = [("backend",), ("utils",), ("layers",), ("quantizers",), ("quantize", "optimizers"), ("models",),
         ("summary", "report"), ("data",), ("training",), ("bsq", "export", "interop", "autobuilder", "quadratize"),
         ("cli",)]
LEVEL = {name: level for level, names in enumerate(ORDER) for name in names}

# Not debt: modules that import an optional heavy dependency at their top are imported on use.
OPTIONAL_LOCAL = {
    ('quadkeras.interop.verify', 'quadkeras.interop.torch_nets'): "torch_nets imports torch at its top",
    ('quadkeras.training.fast_forward', 'quadkeras.training.torch_layers'): "torch_layers imports torch at "
                                                                              "its top (torch runs only)",
}


def _module_name(path):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(module, is_package, node, modules):
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[:len(package) - node.level + 1]
        base = ".".join(package + ([base] if base else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]


def _ancestors(name):
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(2, len(parts))}


def _runs(module, target):
    """What importing `target` from `module` executes: it and its not-yet-imported packages."""
    return ({target} | _ancestors(target)) - _ancestors(module) - {module}


def full_graph():
    """`import_graph` with the function-local imports as edges too."""
    graph, local = import_graph()
    for module, target, _ in local:
        graph[module] |= _runs(module, target)
    return graph


def import_graph():
    """({module: {quadkeras modules its module-level imports run, parent packages included}},
    [(module, imported module, line) of function-local quadkeras imports])."""
    paths = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph, local = collections.defaultdict(set), []
    for module, path in paths.items():
        def visit(node, in_function):
            for child in ast.iter_child_nodes(node):
                inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for target in _targets(module, path.name == "__init__.py", child, paths):
                        if target in paths:  # the package top `quadkeras` included
                            if in_function:
                                local.append((module, target, child.lineno))
                            else:
                                graph[module] |= _runs(module, target)
                visit(child, inner)
        visit(ast.parse(path.read_text()), False)
    return graph, local


def _cycles(graph):
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def connect(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def _level(module):
    parts = module.split(".")
    return LEVEL.get(parts[1]) if len(parts) > 1 else LEVEL["cli"]  # the package top: the apps' level


def test_every_subpackage_has_a_level():
    subpackages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert subpackages == set(LEVEL), subpackages ^ set(LEVEL)


def test_imports_follow_the_dependency_order():
    upward = {(a, b) for a, targets in full_graph().items() for b in targets if _level(b) > _level(a)}
    assert upward == set(), sorted(upward)


def test_no_module_level_import_cycles():
    graph, _ = import_graph()
    assert _cycles(graph) == []


def test_no_import_cycles_function_local_imports_included():
    cycles = _cycles(full_graph())
    assert cycles == [], cycles


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_new_function_local_imports():
    _, local = import_graph()
    found = {(module, target) for module, target, _ in local}
    known = set(OPTIONAL_LOCAL)
    assert found - known == set(), sorted(found - known)
    assert known - found == set(), "moved: drop from OPTIONAL_LOCAL"


def test_every_allowed_local_import_says_why():
    assert all(isinstance(why, str) and len(why) > 20 for why in OPTIONAL_LOCAL.values())


def _loaded_after(statement):
    code = f"import sys; {statement}; print(' '.join(m for m in sys.modules if m.startswith('quadkeras')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT.parent)
    return set(out.stdout.split())


# Not loaded by `import quadkeras` / `import quadkeras.layers` (both run quadkeras/__init__,
# which registers the serializable classes: layers, quantizers, BSQ layers, the optimizer and
# schedules, so `keras.models.load_model` works after `import quadkeras`).
HEAVY = ("quadkeras.training.trainer", "quadkeras.training.config", "quadkeras.training.distribute",
         "quadkeras.data", "quadkeras.bsq.convert", "quadkeras.bsq.callback", "quadkeras.export",
         "quadkeras.interop", "quadkeras.autobuilder", "quadkeras.cli")




@pytest.mark.parametrize("statement", ["import quadkeras.layers", "import quadkeras"])
def test_light_imports(statement):
    loaded = _loaded_after(statement)
    assert statement.split()[-1] in loaded
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    training = {m for m in loaded if m.split(".")[:2] == ["quadkeras", "training"]}
    assert training == set(), sorted(training)  # the optimizer and schedules: quadkeras.optimizers


def test_lazy_names_resolve():
    import quadkeras
    from quadkeras.bsq import to_bsq
    from quadkeras.training import train

    assert quadkeras.__version__
    assert quadkeras.training.train is train and quadkeras.bsq.to_bsq is to_bsq
    with pytest.raises(AttributeError):
        quadkeras.not_a_subpackage  # noqa: B018
