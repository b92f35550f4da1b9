"""The package's architecture as the docs' layout map states it: no import cycles, and the shipped packages
(`models/`, `schedulers/`, `pipelines/`) import only libraries and each other, never the tooling around them."""

import ast
import sys
from pathlib import Path

import pixelgen_diffusers


PACKAGE = Path(pixelgen_diffusers.__file__).parent
SHIPPED = ("models", "schedulers", "pipelines")
SHIPPED_MAY_IMPORT = {"torch", "diffusers", "transformers", "numpy", "PIL", "peft"}


def module_name(path: Path) -> str:
    parts = ["pixelgen_diffusers", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    """Every module of the package, less the code copies inside the bundled model folders (data, not modules)."""
    return {
        module_name(path): path
        for path in sorted(PACKAGE.rglob("*.py"))
        if not path.relative_to(PACKAGE).parts[0] == "demo" or len(path.relative_to(PACKAGE).parts) == 2
    }


def _runtime_nodes(tree: ast.AST):
    """The import statements that can run: `if TYPE_CHECKING:` blocks are skipped (annotations only)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (child for branch in node.orelse for child in _runtime_nodes(ast.Module([branch], [])))
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _runtime_nodes(node)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules `name` imports (at module level or inside functions), each resolved to its module."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif node.level == 0:
            targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            base = name.split(".") if is_package else name.split(".")[:-1]
            base = base[: len(base) - node.level + 1]
            stem = ".".join(base + ([node.module] if node.module else []))
            targets = [stem] + [f"{stem}.{alias.name}" for alias in node.names]
        found |= {target for target in targets if target in modules and target != name}
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for successor in sorted(graph[node]):
            if state.get(successor) == "open":
                return stack[stack.index(successor) :] + [successor]
            if successor not in state and (cycle := visit(successor)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 30 and sum(map(len, graph.values())) > 50  # the walk sees the package
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_shipped_packages_import_only_libraries_and_each_other():
    modules = package_modules()
    checked = 0
    for name, path in modules.items():
        parts = name.split(".")
        if len(parts) < 2 or parts[1] not in SHIPPED:
            continue
        for node in _runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1, f"{name}: `from {'.' * node.level}{node.module} import` leaves its package"
                continue
            roots = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module]
            for root in (root.split(".")[0] for root in roots):
                assert root in sys.stdlib_module_names or root in SHIPPED_MAY_IMPORT, f"{name} imports {root}"
        checked += 1
    assert checked >= 5
