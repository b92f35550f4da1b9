"""Model-folder modules import only libraries and their shipped siblings (`from .sibling import ...`). A pipeline
(folder root) and a transformer (`transformer/`) cannot import each other's or the package's helpers, so the few they
share exist once per shipped folder: `# Copied from X` marks each copy and this test keeps every copy identical to its
origin (diffusers' `make fix-copies` convention)."""

import ast
import importlib
import inspect
import re
import textwrap
from pathlib import Path

import pixelgen_diffusers


PACKAGE = Path(pixelgen_diffusers.__file__).parent
MARKER = re.compile(r"^\s*# Copied from (pixelgen_diffusers\.[\w.]+)\s*$")
STANDALONE = ["models/transformer_jit", "models/transformer_jit_t2i", "models/jit_layers",
              "schedulers/scheduling_pixelgen", "pipelines/pipeline_pixelgen_c2i", "pipelines/pipeline_pixelgen_t2i",
              "pipelines/pipeline_utils_pixelgen"]  # fmt: skip


def _definitions(tree: ast.AST, prefix: str = ""):
    for node in getattr(tree, "body", []):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            yield f"{prefix}{node.name}", node
            if isinstance(node, ast.ClassDef):
                yield from _definitions(node, f"{prefix}{node.name}.")


def _body_source(source: str, node: ast.AST) -> str:
    """The definition without its decorators, dedented."""
    lines = source.splitlines()[node.lineno - 1 : node.end_lineno]
    return textwrap.dedent("\n".join(lines))


def _resolve(origin: str) -> str:
    """Source of `package.module.Class.method`: the longest importable prefix is the module."""
    parts = origin.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        source = inspect.getsource(module)
        wanted = ".".join(parts[split:])
        for name, node in _definitions(ast.parse(source)):
            if name == wanted:
                return _body_source(source, node)
        raise AssertionError(f"{origin}: no such definition")
    raise AssertionError(f"{origin}: module not found")


def test_copied_definitions_match_their_origin():
    checked = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        lines = source.splitlines()
        for name, node in _definitions(ast.parse(source)):
            first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            match = MARKER.match(lines[first - 2]) if first >= 2 else None
            if match:
                assert _body_source(source, node) == _resolve(match.group(1)), f"{path.name}:{name} drifted"
                checked += 1
    assert checked >= 4


def test_model_folder_modules_import_only_torch_diffusers_transformers():
    allowed = {"torch", "diffusers", "transformers", "numpy", "PIL"}
    for name in STANDALONE:
        tree = ast.parse((PACKAGE / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level:
                # a sibling shipped beside it: diffusers copies single-dot relative imports with remote code
                assert node.level == 1 and node.module, f"{name}.py: `from {'.' * node.level}{node.module} import`"
                assert (PACKAGE / name).parent.joinpath(f"{node.module}.py").is_file(), f"{name}.py: no {node.module}"
                continue
            elif isinstance(node, ast.ImportFrom):
                roots = [node.module.split(".")[0]]
            else:
                continue
            for root in roots:
                is_stdlib = root in __import__("sys").stdlib_module_names
                assert is_stdlib or root in allowed, f"{name}.py imports {root}"
