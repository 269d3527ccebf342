"""The package's import graph: no circle, library code never imports the CLI, no
function-level imports of the project's own modules outside cli/ and the lazy package API; and
one home per fact: each public top-level name is defined in one module of src (others import it).
Sizes: no module of src over 300 lines, no function (nested ones included) over 60.

    python tests/test_imports.py [SRC_DIR]     # prints files, arrows and circles of the graph
"""

import ast
import pathlib
import sys

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "mopo_jax"
ENTRY_POINTS = {"mopo_jax.train", "mopo_jax.__main__"}  # shims that run a CLI by design
# Names that several modules define on purpose: each CLI module's entry points and program name,
# each module's logger, and each config's own inverse of config_dict.config_to_dict.
CONVENTIONS = {"main", "parse", "build_parser", "PROG", "log", "config_from_dict"}
MAX_FILE_LINES, MAX_FUNCTION_LINES = 300, 60


def _module_name(root: pathlib.Path, path: pathlib.Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["mopo_jax", *parts])


def _resolve(name: str, modules: set[str]) -> str | None:
    """The project module an import refers to (a module, or the package holding a name)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(root: pathlib.Path = SRC) -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    """(module -> project modules it imports at top level, [(module, target, line)] of imports
    made inside functions)."""
    files = {_module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    graph, nested = {m: set() for m in modules}, []
    for mod, path in files.items():
        tree = ast.parse(path.read_text())
        top = set(map(id, tree.body))
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                target = _resolve(t, modules)
                if target is None or target == mod or not t.startswith("mopo_jax"):
                    continue
                if id(node) in top:
                    graph[mod].add(target)
                else:
                    nested.append((mod, target, node.lineno))
    return graph, nested


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def public_definitions(root: pathlib.Path = SRC) -> dict[str, list[str]]:
    """Public top-level name -> modules that define it (def, class or assignment; imports are not
    definitions)."""
    out: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
            else:
                names = []
            for name in names:
                if not name.startswith("_"):
                    out.setdefault(name, []).append(_module_name(root, path))
    return out


def size_offenders(root: pathlib.Path = SRC) -> list[str]:
    """Modules over MAX_FILE_LINES lines ('path: N lines') and functions, methods and nested
    functions over MAX_FUNCTION_LINES, decorators not counted ('path:line name(): N lines')."""
    out = []
    for path in sorted(root.rglob("*.py")):
        text, rel = path.read_text(), path.relative_to(root).as_posix()
        if len(text.splitlines()) > MAX_FILE_LINES:
            out.append(f"{rel}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    out.append(f"{rel}:{node.lineno} {node.name}(): {length} lines")
    return out


def _is_cli(mod: str) -> bool:
    return mod.startswith("mopo_jax.cli")


def test_no_import_circle():
    graph, _ = import_graph()
    assert cycles(graph) == []


def test_library_never_imports_the_cli():
    graph, nested = import_graph()
    edges = [(m, t) for m, ts in graph.items() for t in ts] + [(m, t) for m, t, _ in nested]
    bad = [(m, t) for m, t in edges if _is_cli(t) and not _is_cli(m) and m not in ENTRY_POINTS
           and not m.endswith(".__main__")]
    assert bad == []


def test_function_level_imports_only_in_cli_and_the_lazy_api():
    _, nested = import_graph()
    lazy_api = {"mopo_jax", "mopo_jax.data"}  # module __getattr__ re-exports
    # data.collect runs in spawned worker processes that must not import JAX: it imports the
    # actor (JAX) and the worker pool (which imports collect back) only when a build needs them.
    jax_free_workers = {("mopo_jax.data.collect", t) for t in
                        ("mopo_jax.data.parallel", "mopo_jax.sac.config", "mopo_jax.sac.policy")}
    bad = [(m, t, line) for m, t, line in nested if not _is_cli(m) and m not in lazy_api
           and (m, t) not in jax_free_workers]
    assert bad == []


def test_one_definition_per_public_name():
    twice = {name: mods for name, mods in public_definitions().items()
             if len(set(mods)) > 1 and name not in CONVENTIONS}
    assert twice == {}


def test_the_definition_check_can_fail(tmp_path):
    (tmp_path / "a.py").write_text("X = 1\ndef f(): pass\n_private = 2\n")
    (tmp_path / "b.py").write_text("from mopo_jax.a import X\nclass f: pass\n_private = 3\n")
    assert public_definitions(tmp_path) == {"X": ["mopo_jax.a"], "f": ["mopo_jax.a", "mopo_jax.b"]}


def test_no_module_or_function_too_long():
    offenders = size_offenders()
    assert offenders == [], (f"over {MAX_FILE_LINES} lines a module or {MAX_FUNCTION_LINES} a "
                             f"function: {'; '.join(offenders)}")


def test_the_size_check_can_fail(tmp_path):
    def module(lines: int, function_lines: int, prefix: str = "") -> str:
        """`prefix`, a function of `function_lines` lines (nested in it when prefix is a class
        header), then blank lines up to `lines`."""
        indent = "    " if prefix else ""
        text = prefix + f"{indent}async def f():\n" + f"{indent}    x = 0\n" * (function_lines - 1)
        return text + "\n" * (lines - len(text.splitlines()))

    (tmp_path / "at_limits.py").write_text(module(MAX_FILE_LINES, MAX_FUNCTION_LINES))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "over.py").write_text(
        module(MAX_FILE_LINES + 1, MAX_FUNCTION_LINES + 1, prefix="class C:\n"))
    assert size_offenders(tmp_path) == [f"pkg/over.py: {MAX_FILE_LINES + 1} lines",
                                        f"pkg/over.py:2 f(): {MAX_FUNCTION_LINES + 1} lines"]


def test_the_checks_can_fail():
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


if __name__ == "__main__":
    root = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else SRC
    g, n = import_graph(root)
    print(f"{len(g)} modules, {sum(map(len, g.values()))} top-level arrows, "
          f"{len(n)} function-level imports of project modules, circles: {cycles(g)}")
