"""The package layout: one folder per concern, imports running one way, no reaching into private names."""

import ast
import os

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kdistill")

#: leaf modules any wing may import (they import nothing from kdistill)
LEAVES = {"errors"}

#: wing -> the wings it may import (besides itself)
ALLOWED = {
    "errors": set(),
    "models": set(),
    "adapters": set(),
    "losses": set(),
    "batches": set(),
    "data": {"backend", "batches"},
    "statistics": set(),
    "tf_train_step": set(),
    "backend": set(),
    "plots": set(),
    "quantize": set(),
    "evaluation": {"models"},
    "distiller": {"models", "adapters", "losses", "tf_train_step"},
    "export": {"models", "backend", "quantize"},
    "run": {"models", "adapters", "losses", "distiller", "data", "batches", "evaluation", "plots", "export", "statistics", "backend", "quantize"},
    "cli": {"models", "adapters", "losses", "distiller", "data", "batches", "evaluation", "plots", "export", "statistics", "run", "backend", "quantize"},
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
    wrong = [f"{importer} imports {name} from {imported}" for importer, imported, names in _imports()
             for name in names if name.startswith("_") and _wing(importer) != _wing(imported)]
    assert not wrong, "\n".join(wrong)


def test_the_flat_modules_of_0_1_are_gone_and_each_wing_is_a_folder():
    for wing in ("models", "adapters", "losses", "run", "export"):
        assert os.path.isfile(os.path.join(PACKAGE, wing, "__init__.py")), wing
    flat = sorted(name for name in os.listdir(PACKAGE) if name.endswith(".py"))
    assert flat == ["__init__.py", "backend.py", "batches.py", "cli.py", "data.py", "distiller.py", "errors.py", "evaluation.py", "plots.py", "statistics.py", "tf_train_step.py"]
    long = [os.path.relpath(os.path.join(root, name), PACKAGE) for root, _, files in os.walk(PACKAGE) for name in files
            if name.endswith(".py") and sum(1 for _ in open(os.path.join(root, name))) > 500]
    assert not long, f"modules past 500 lines (split them): {long}"
