"""The engine's packages depend on each other in one direction only.

``ceremony/`` is split by concern (DESIGN.md, "Layout"): a package may import from itself and from
the packages above it in :data:`ORDER`, never from one below it. So the data flow shows in the
tree: the ceremonies use the transcript, the transcript never knows a ceremony; the CRL job uses the
registry, the registry never knows a CRL. The test reads the source (every import statement, at any
depth), so a late import inside a function cannot hide a dependency, and it also refuses what was
used to dodge cycles before: function-local imports, private names imported from another module,
and import cycles between modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO

ENGINE = REPO / "ceremony"

#: Packages from the bottom up: each may use the ones before it.
ORDER = ("common", "definition", "hsm", "x509", "ca", "crl", "ocsp", "backup", "transcript", "policy", "ceremonies",
         "rehearsal")


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(REPO).with_suffix("").parts): p for p in sorted(ENGINE.rglob("*.py"))}


def ceremony_imports(tree: ast.AST, module: str) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, names) for every import of the engine in ``tree``, relative ones resolved."""
    found = []
    package = module.rsplit(".", 1)[0]  # ceremony.x for ceremony.x.y and for ceremony.x.__init__
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target == "ceremony" or target.startswith("ceremony."):
                found.append((node.lineno, target, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name, []) for a in node.names if a.name.startswith("ceremony"))
    return found


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else None


def test_every_engine_module_lives_in_a_package_of_the_layout() -> None:
    loose = [m for m in modules() if m != "ceremony.__init__" and package_of(m) is None]
    assert loose == [], f"modules directly under ceremony/: {loose}; put each in one of {ORDER}"
    unknown = sorted({package_of(m) for m in modules()} - {None, *ORDER})
    assert unknown == [], f"packages not in the layout: {unknown} (add them to ORDER and DESIGN.md deliberately)"


def test_dependencies_point_one_way() -> None:
    wrong = []
    for module, path in modules().items():
        own = package_of(module)
        if own is None:
            continue
        for line, target, names in ceremony_imports(ast.parse(path.read_text()), module):
            # ``from ceremony.x import y`` may name a module y of package x
            other = target.split(".")[1] if target.count(".") >= 1 else (names[0] if names else "")
            if other in ORDER and ORDER.index(other) > ORDER.index(own):
                wrong.append(f"{path.relative_to(REPO)}:{line}: {own} imports {target} ({other} comes after {own})")
    assert wrong == [], "\n".join(wrong)


def test_no_function_local_imports_and_no_private_names_across_modules() -> None:
    found = []
    for module, path in modules().items():
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.extend(f"{path.relative_to(REPO)}:{node.lineno}: import inside {func.name}()"
                             for node in ast.walk(func) if isinstance(node, (ast.Import, ast.ImportFrom)))
        for line, target, names in ceremony_imports(tree, module):
            found.extend(f"{path.relative_to(REPO)}:{line}: private name {n} imported from {target}"
                         for n in names if n.startswith("_"))
    assert found == [], "\n".join(found)


def test_no_import_cycles_between_engine_modules() -> None:
    known = modules()
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        edges = set()
        for _, target, names in ceremony_imports(ast.parse(path.read_text()), module):
            for candidate in (target, *(f"{target}.{n}" for n in names)):
                if candidate in known and candidate != module:
                    edges.add(candidate)
        graph[module] = edges
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert cycles == [], "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("forbidden", ["invoke", "ansible"])
def test_the_engine_imports_neither_invoke_nor_ansible(forbidden: str) -> None:
    found = []
    for module, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found.extend(f"{module}: {n}" for n in names if n == forbidden or n.startswith(forbidden + "."))
    assert found == []


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The direction check is not vacuous: an upward import written in a common module is found."""
    tree = ast.parse("from ceremony.ceremonies.runner import CeremonyRun\n")
    (_, target, _), = ceremony_imports(tree, "ceremony.common.outputs")
    assert ORDER.index(target.split(".")[1]) > ORDER.index("common")
