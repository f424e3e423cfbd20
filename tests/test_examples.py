"""Every example script runs as written (--quick) on small offline data with a saved ResNet50 teacher."""

import os
import runpy
import subprocess
import sys

import pytest

from conftest import resnet50_shaped_teacher
from test_data import make_fashion_mnist

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
SCRIPTS = sorted(name for name in os.listdir(EXAMPLES) if name[:2].isdigit() and name.endswith(".py"))


#: runs argv[1] as __main__ with TensorFlow's functions eager (the `eager` marker's setting, for a fresh interpreter):
#: example 05's few steps under MirroredStrategy took 13 s that way and 35 s traced
_EAGER_MAIN = (
    "import runpy, sys\nimport tensorflow as tf\ntf.config.run_functions_eagerly(True)\n"
    "sys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')"
)


@pytest.fixture(scope="module")
def example_inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("examples")
    make_fashion_mnist(folder / "data", train=200, test=64, seed=4)
    teacher = str(folder / "teacher.keras")
    # A small stand-in with ResNet50's stage names and resolutions: the scripts' taps and presets apply unchanged,
    # and the test spends its time on the scripts rather than on tracing a real ResNet50 six times.
    resnet50_shaped_teacher().save(teacher)
    return folder, teacher


def test_there_are_six_examples():
    assert len(SCRIPTS) == 6, SCRIPTS


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.eager
def test_example_runs_quick(script, example_inputs, capsys, monkeypatch):
    folder, teacher = example_inputs
    path = os.path.join(EXAMPLES, script)
    arguments = [
        "--quick",
        "--data-dir",
        str(folder / "data"),
        "--teacher",
        teacher,
        "--output-dir",
        str(folder / script),
    ]
    with open(path) as handle:
        # TensorFlow takes logical devices only before it starts: such a script needs a fresh interpreter.
        fresh_process = "set_logical_device_configuration" in handle.read()
    if fresh_process:  # run as `python <script>` runs it, with functions eager as in this process (the traced MirroredStrategy step: tests/_mirrored_step.py)
        result = subprocess.run(
            [sys.executable, "-c", _EAGER_MAIN, path, *arguments],
            capture_output=True,
            text=True,
            timeout=300,
            env=dict(
                os.environ,
                TF_CPP_MIN_LOG_LEVEL="3",
                PYTHONPATH=os.pathsep.join([EXAMPLES, os.environ.get("PYTHONPATH", "")]),
            ),
        )
        assert result.returncode == 0, result.stderr[-3000:]
        out = result.stdout
    else:  # as `python examples/<script> ...` does, in this process (TensorFlow is imported once, not once per script)
        monkeypatch.syspath_prepend(EXAMPLES)
        monkeypatch.setattr(sys, "argv", [path, *arguments])
        runpy.run_path(path, run_name="__main__")
        out = capsys.readouterr().out
    assert "top-1" in out or "agreement" in out, out[-2000:]


def _kdistill_aliases(statements) -> dict:
    """`{local name: kdistill module}` that the `from kdistill... import ...` among `statements` bind (not those in nested functions)."""
    import ast
    import importlib

    aliases = {}
    for node in statements:
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "kdistill":
            for alias in node.names:
                try:
                    aliases[alias.asname or alias.name] = importlib.import_module(f"{node.module}.{alias.name}")
                except ImportError:  # a class or function, not a module
                    aliases.pop(alias.asname or alias.name, None)
    return aliases


def _own_nodes(scope):
    """The nodes of `scope` outside the functions defined in it."""
    import ast

    pending = list(ast.iter_child_nodes(scope))
    while pending:
        node = pending.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            pending.extend(ast.iter_child_nodes(node))


def test_scripts_use_only_names_their_kdistill_modules_have():
    """`recipes.train_teacher` with `recipes` bound to kdistill.run.jobs failed only when a script ran that branch (no teacher file yet)."""
    import ast
    import glob

    root = os.path.dirname(EXAMPLES)
    missing = []
    paths = sorted(
        sum(
            (glob.glob(os.path.join(root, pattern)) for pattern in ("examples/*.py", "benchmarks/*.py", "tools/*.py")),
            [],
        )
    )
    for path in paths:
        tree = ast.parse(open(path).read())
        module_aliases = _kdistill_aliases(tree.body)
        for scope in [tree] + [
            node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        ]:
            nodes = list(_own_nodes(scope))
            aliases = module_aliases if scope is tree else {**module_aliases, **_kdistill_aliases(nodes)}
            missing += [
                f"{os.path.relpath(path, root)}:{node.lineno} {node.value.id}.{node.attr}"
                for node in nodes
                if isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and not hasattr(aliases[node.value.id], node.attr)
            ]
    assert paths and not missing, missing
