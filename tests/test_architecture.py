"""The import graph of the package (read with ast, nothing imported): no cycles, imports point down the pipeline's
stack (docs/architecture.md), no command imports another command, and models/ imports nothing of galip_bench."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# lowest first; a module may import its own package and any package of a lower layer
LAYERS = [
    ("galip_bench.errors",),  # the user-error type: any module may raise it
    ("galip_bench.files", "galip_bench.devices", "galip_bench.provenance", "galip_bench.progress",
     "galip_bench.signals", "galip_bench.distributed"),
    ("galip_bench.config",),
    ("galip_bench.data", "galip_bench.metrics"),
    ("galip_bench.shapes",),
    ("galip_bench.checkpoints", "galip_bench.runs"),
    ("galip_bench.train", "galip_bench.evaluation"),
    ("galip_bench.grids", "galip_bench.benchmark"),
    ("galip_bench.report",),
    ("galip_bench.commands",),
    ("galip_bench.cli",),
    ("galip_bench.__main__",),
]


def modules(package: str) -> dict:
    """{module name: path} of every .py file of a top-level package."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(path: Path, known: dict) -> set:
    """Modules of `known` that a file imports (at any depth of the file, lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return {m for m in found if m in known or m.split(".")[0] in ("galip_bench", "models")}


def graph() -> dict:
    known = {**modules("galip_bench"), **modules("models")}
    return {name: imports(path, known) for name, path in known.items()}


def layer_of(module: str) -> tuple:
    if module == "galip_bench":  # the package's own __init__ (its version)
        return 0, module
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                return i, prefix
    raise AssertionError(f"{module} is in no layer of docs/architecture.md: add its package to LAYERS")


def cycles(edges: dict) -> list:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in edges:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))
    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_imports_point_down_the_stack():
    wrong = []
    for module, targets in graph().items():
        if not module.startswith("galip_bench"):
            continue
        mine = layer_of(module)
        for target in targets:
            if not target.startswith("galip_bench"):
                continue
            theirs = layer_of(target)
            if theirs[0] > mine[0] or (theirs[0] == mine[0] and theirs[1] != mine[1]):
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_no_command_imports_another_command():
    from galip_bench.cli import COMMANDS
    commands = {f"galip_bench.commands.{module}" for module, _ in COMMANDS.values()}
    edges = graph()
    wrong = [f"{c} -> {t}" for c in commands for t in edges[c] if t in commands and t != c]
    assert wrong == []
    assert len(commands) == len(COMMANDS) and all(c in edges for c in commands)


def test_models_is_pure_torch():
    wrong = [f"{m} -> {t}" for m, targets in graph().items() if m.startswith("models")
             for t in targets if t.startswith("galip_bench")]
    assert wrong == []


def test_the_checker_sees_a_cycle_and_an_upward_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer_of("galip_bench.commands.eval")[0] > layer_of("galip_bench.report.tables")[0]
    edges = graph()  # the real graph is read: lazy imports inside functions count too
    assert "galip_bench.evaluation.evaluate" in edges["galip_bench.commands.eval"]
    assert "galip_bench.train.loop" in edges["galip_bench.grids.launch"]  # imported inside a method
