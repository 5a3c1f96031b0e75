"""The package's layering (DESIGN.md, "Folders"): no import cycles among proxy modules, and the
simulator (``proxy.sim``) imported from outside it only where the embedded engine is started
and by the CLI.

Imports are read from the source with ``ast``: every ``import`` and ``from ... import``
statement counts, also inside functions and ``if TYPE_CHECKING:`` blocks, since a late or
type-only import is how a cycle hides.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "proxy"
SIM = "proxy.sim"
# The only modules outside proxy/sim/ that may import it: the starter of the embedded
# simulated engine, and the CLI (``autellix sim-engine`` and ``autellix bench``).
SIM_IMPORTERS = frozenset({"proxy.server", "proxy.cli"})
# proxy/sim/'s two halves: the simulator runs the simulated engine's model, never the reverse.
SIM_ENGINE = "proxy.sim.engine"
SIMULATOR = "proxy.sim.simulator"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules_of(root: Path, package: str) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}


def imports_of(path: Path, module: str, known: Iterable[str]) -> set[str]:
    """The known modules that ``module`` (at ``path``) imports anywhere in its source."""
    known = set(known)
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(_known_prefix(alias.name, known) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package)
            for alias in node.names:
                # ``from pkg import mod`` imports the module pkg.mod; ``from mod import name``
                # imports mod.
                target = f"{base}.{alias.name}"
                out.add(target if target in known else _known_prefix(base, known))
    out.discard("")
    out.discard(module)
    return out


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join([*package, node.module] if node.module else package)


def _known_prefix(name: str, known: set[str]) -> str:
    """The longest known module that ``name`` is or lies in ("" for other packages)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return ""


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    modules = modules_of(root, package)
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
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
            visit(node)
    return sorted(found)


def in_sim(module: str) -> bool:
    return module == SIM or module.startswith(SIM + ".")


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def engine_imports_of_the_simulator(graph: Mapping[str, Iterable[str]]) -> list[str]:
    return sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if in_package(module, SIM_ENGINE)
        for target in targets
        if in_package(target, SIMULATOR)
    )


def sim_imports_from_outside(graph: Mapping[str, Iterable[str]]) -> list[str]:
    return sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if not in_sim(module) and module not in SIM_IMPORTERS
        for target in targets
        if in_sim(target)
    )


# The package ----------------------------------------------------------------------------------


def test_no_import_cycles_among_proxy_modules() -> None:
    graph = import_graph(ROOT, PACKAGE)
    assert len(graph) > 50  # the whole package was read
    assert cycles(graph) == []


def test_only_the_embedded_engines_starter_and_the_cli_import_the_simulator() -> None:
    graph = import_graph(ROOT, PACKAGE)
    assert sim_imports_from_outside(graph) == []
    for module in SIM_IMPORTERS:  # the exceptions are real modules, not stale names
        assert module in graph


def test_the_simulated_engine_never_imports_the_simulator() -> None:
    graph = import_graph(ROOT, PACKAGE)
    assert SIM_ENGINE in graph  # the halves exist under these names
    assert SIMULATOR in graph
    assert engine_imports_of_the_simulator(graph) == []


# The checker itself ----------------------------------------------------------------------------


def _write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_a_cycle_through_a_late_relative_import_is_found(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import thing\n",
            "pkg/b.py": "def thing():\n    from . import c\n",
            "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n",
            "pkg/d.py": "import pkg.a\nimport json\n",
        },
    )
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.b"] == {"pkg.c"}
    assert graph["pkg.d"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_an_import_of_the_simulator_from_elsewhere_is_named(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "proxy/__init__.py": "",
            "proxy/server.py": "from proxy.sim.config import X\n",
            "proxy/routes.py": "def f():\n    from proxy.sim import text\n",
            "proxy/sim/__init__.py": "",
            "proxy/sim/config.py": "from ..routes import f\n",
            "proxy/sim/text.py": "",
        },
    )
    graph = import_graph(tmp_path, "proxy")
    assert graph["proxy.sim.config"] == {"proxy.routes"}
    assert sim_imports_from_outside(graph) == ["proxy.routes imports proxy.sim.text"]


def test_an_import_of_the_simulator_from_the_engine_half_is_named(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "proxy/__init__.py": "",
            "proxy/sim/__init__.py": "",
            "proxy/sim/engine/__init__.py": "",
            "proxy/sim/engine/server.py": "from proxy.sim.simulator.des import Simulator\n",
            "proxy/sim/simulator/__init__.py": "",
            "proxy/sim/simulator/des.py": "from proxy.sim.engine import server\n",
        },
    )
    graph = import_graph(tmp_path, "proxy")
    assert engine_imports_of_the_simulator(graph) == [
        "proxy.sim.engine.server imports proxy.sim.simulator.des"
    ]
