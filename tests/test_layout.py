"""The package layout: one folder per concern, imports running one way, no reaching into private names."""

import ast
import os

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kdistill")

#: leaf modules any wing may import (they import nothing from kdistill)
LEAVES = {"errors", "files", "labels", "fit_build"}

#: wing -> the wings it may import (besides itself)
ALLOWED = {
    "errors": set(),
    "files": set(),
    "labels": set(),
    "fit_build": set(),
    "models": set(),
    "adapters": set(),
    "losses": set(),
    "data": {"backend", "models"},
    "statistics": set(),
    "tf_train_step": set(),
    "backend": set(),
    "plots": set(),
    "quantize": {"models"},
    "evaluation": {"models"},
    "segmentation_metrics": {"models"},
    "distiller": {"models", "adapters", "losses", "tf_train_step"},
    "export": {"models", "backend", "quantize", "segmentation_metrics"},
    "run": {
        "models",
        "adapters",
        "losses",
        "distiller",
        "data",
        "evaluation",
        "plots",
        "export",
        "statistics",
        "backend",
        "quantize",
        "segmentation_metrics",
    },
    "cli": {
        "models",
        "adapters",
        "losses",
        "distiller",
        "data",
        "evaluation",
        "plots",
        "export",
        "statistics",
        "run",
        "backend",
        "quantize",
        "segmentation_metrics",
    },
}


def _wing(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports():
    """(importing module, imported kdistill module, names) for every import in the package."""
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(root, name)
            module = "kdistill." + os.path.relpath(path, PACKAGE)[:-3].replace(os.sep, ".").replace(".__init__", "")
            if module == "kdistill.__init__":
                continue
            for node in ast.walk(ast.parse(open(path).read())):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kdistill"):
                    names = [alias.name for alias in node.names]
                    if node.module == "kdistill":
                        for imported in names:
                            yield module, f"kdistill.{imported}", []
                    else:
                        yield module, node.module, names


def test_imports_run_one_way_between_wings():
    wrong = []
    for importer, imported, _ in _imports():
        source, target = _wing(importer), _wing(imported)
        if source != target and target not in ALLOWED[source] | LEAVES:
            wrong.append(f"{importer} imports {imported}")
    assert not wrong, "imports against the layout's direction:\n" + "\n".join(wrong)


def test_no_module_imports_another_wings_private_names():
    wrong = [
        f"{importer} imports {name} from {imported}"
        for importer, imported, names in _imports()
        for name in names
        if name.startswith("_") and _wing(importer) != _wing(imported)
    ]
    assert not wrong, "\n".join(wrong)


def test_the_flat_modules_of_0_1_are_gone_and_each_wing_is_a_folder():
    for wing in ("models", "adapters", "losses", "run", "export", "data", "cli", "distiller"):
        assert os.path.isfile(os.path.join(PACKAGE, wing, "__init__.py")), wing
    flat = sorted(name for name in os.listdir(PACKAGE) if name.endswith(".py"))
    assert flat == [
        "__init__.py",
        "backend.py",
        "errors.py",
        "evaluation.py",
        "files.py",
        "fit_build.py",
        "labels.py",
        "plots.py",
        "segmentation_metrics.py",
        "statistics.py",
        "tf_train_step.py",
    ]


def test_every_module_is_at_most_400_lines_and_every_function_at_most_80():
    """Issue 26's bound for the whole package (a module past it splits by job; a function past it becomes named stages)."""
    long_modules, long_functions = [], []
    for root, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.relpath(os.path.join(root, name), PACKAGE)
            text = open(os.path.join(root, name)).read()
            if text.count("\n") > 400:
                long_modules.append(f"{path} ({text.count(chr(10))} lines)")
            long_functions += [
                f"{path}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
                for node in ast.walk(ast.parse(text))
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80
            ]
    assert not long_modules and not long_functions, (long_modules, long_functions)


def _module_graph() -> dict[str, set[str]]:
    """kdistill module -> the kdistill modules it imports, at the top or inside a function (`from a import b`: a.b where b is a module)."""
    paths = {}
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                paths[
                    ("kdistill." + os.path.relpath(path, PACKAGE)[:-3].replace(os.sep, ".")).replace(".__init__", "")
                ] = path
    graph = {module: set() for module in paths}
    for module, path in paths.items():
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "kdistill":
                graph[module] |= {
                    f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in paths else node.module
                    for alias in node.names
                }
            elif isinstance(node, ast.Import):
                graph[module] |= {alias.name for alias in node.names if alias.name in paths}
    return {
        module: {imported for imported in imports if imported in paths and imported != module}
        for module, imports in graph.items()
    }


def _cycle_from(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    """The shortest import path from `start` back to itself, or None."""
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for imported in sorted(graph[path[-1]]):
            if imported == start:
                return path + [start]
            if imported not in seen:
                seen.add(imported)
                paths.append(path + [imported])
    return None


def test_no_import_cycle_among_kdistill_modules():
    """Also inside one package and through imports inside functions: a cycle works only while the import order happens to suit it."""
    graph = _module_graph()
    assert {"kdistill", "kdistill.export", "kdistill.export.writers"} <= set(graph)
    cycles = {" -> ".join(cycle) for module in graph if (cycle := _cycle_from(module, graph)) and module == min(cycle)}
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))
