"""Writes the example notebooks from the cells below and, with --execute, runs them to store real outputs.

python examples/notebooks/build_notebooks.py --execute   # from the repository root; a few minutes on 2 CPU cores
"""

import argparse
import os

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))

SETUP = """# Install kdistill where it is missing (Colab); offline machines already have it from `make install`.
# kdistill is not on the package index: run `make wheel` in its repository, which writes dist/kdistill-<version>-py3-none-any.whl,
# and upload that file to /content (Colab's file panel); or set KDISTILL_SOURCE to a wheel path or to the repository's git URL
# (git+https://...). The install keeps Colab's own (GPU) TensorFlow and TFDS.
import glob, importlib.util, os, subprocess, sys
IN_COLAB = "google.colab" in sys.modules
if importlib.util.find_spec("kdistill") is None:
    wheels = sorted(glob.glob("/content/kdistill-*.whl") + glob.glob("kdistill-*.whl") + glob.glob(os.path.join("dist", "kdistill-*.whl")))
    source = os.environ.get("KDISTILL_SOURCE") or (wheels[-1] if wheels else None)
    if source is None:
        raise SystemExit("kdistill is not installed here. Run `make wheel` in kdistill's repository, upload the wheel it writes "
                         "(dist/kdistill-<version>-py3-none-any.whl) to /content, and run this cell again.")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", source], check=True)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras, numpy as np
import kdistill
from kdistill import data, evaluation, export, plots
from kdistill.run import training
from kdistill.models import tap_suggest
from IPython.display import Image, display

# Small settings for the test suite (KDISTILL_NOTEBOOK_QUICK=1); the stored outputs come from the default settings.
QUICK = os.environ.get("KDISTILL_NOTEBOOK_QUICK") == "1"
DATA_DIR = os.environ.get("KDISTILL_DATA_DIR")  # the offline Fashion-MNIST (make data); None searches data/ and /usr/share/datasets
OUTPUT = os.environ.get("KDISTILL_NOTEBOOK_OUTPUT", os.path.join("saved_models", "notebooks"))
os.makedirs(OUTPUT, exist_ok=True)
keras.utils.set_random_seed(0)
print("kdistill", kdistill.__version__, "| Keras", keras.__version__, keras.backend.backend(), "| Colab:", IN_COLAB, "| quick:", QUICK)"""

DATA = """# Offline: Fashion-MNIST from Debian's package. On Colab (with network) CIFAR-10 through TFDS: download=True is the
# explicit opt-in (kdistill never downloads unless asked).
TRAIN_LIMIT, TEST_LIMIT = (256, 64) if QUICK else (4000, 2000)
SOURCE = "tfds:cifar10" if IN_COLAB else "fashion_mnist"
splits = data.load(SOURCE, data_dir=DATA_DIR, image_size=32, batch_size=64, train_limit=TRAIN_LIMIT, test_limit=TEST_LIMIT, download=IN_COLAB)
print(splits.counts, splits.class_names)"""

TEACHER = """# The teacher: a ResNet50. On Colab start from ImageNet weights; offline, train one briefly
# (or reuse the one `kdistill demo` saved).
TEACHER_PATH = os.environ.get("KDISTILL_NOTEBOOK_TEACHER", os.path.join("saved_models", "demo", "teacher.keras"))
if not IN_COLAB and os.path.exists(TEACHER_PATH):
    teacher = kdistill.teachers.load(TEACHER_PATH)
    print("reusing", TEACHER_PATH)
else:
    teacher, _ = training.train_teacher(splits, os.path.join(OUTPUT, "teacher.keras"), epochs=1 if QUICK else 2,
                                       weights="imagenet" if IN_COLAB else None, verbose=2)
print(evaluation.format_table([dict(evaluation.evaluate(teacher, splits.test), name="teacher (ResNet50)")]))"""

NOTEBOOK_1 = [
    new_markdown_cell(
        "# Distill ResNet50 into MobileNetV2\n\nA frozen ResNet50 teacher, a MobileNetV2 student, taps chosen with "
        "kdistill's tap helper, feature + logits distillation, curves, an evaluation table and an int8 TFLite export. "
        "Runs offline on Fashion-MNIST; on Colab it switches to CIFAR-10 and ImageNet weights."
    ),
    new_code_cell(SETUP),
    new_markdown_cell("## Data"),
    new_code_cell(DATA),
    new_markdown_cell("## Teacher"),
    new_code_cell(TEACHER),
    new_markdown_cell(
        "## Choosing taps\n\n`tap_suggest` lists the stage outputs of both networks, proposes a pairing, and scores "
        "every pair by linear CKA on a batch of real images."
    ),
    new_code_cell("""make_student = lambda: kdistill.students.get("mobilenet_v2", num_classes=splits.num_classes, width=0.35)
keras.utils.set_random_seed(0)
student = make_student()
initial = student.get_weights()
batch = next(iter(splits.test))[0]
suggestion = tap_suggest.suggest(teacher, student, batch)
print(tap_suggest.format_suggestion(suggestion))
display(Image(plots.cka_heatmap(suggestion, os.path.join(OUTPUT, "cka.png"))))"""),
    new_markdown_cell("## Distil, and the same student on labels alone"),
    new_code_cell("""EPOCHS = 1 if QUICK else 3
distiller = kdistill.FeatureDistiller(teacher, student, taps=suggestion.pairs, feature_loss="normalized_mse", tap_weights=10.0,
                                      logits_loss="kl", temperature=4.0, alpha=0.9)
for row in distiller.projection_summary():
    print(row["teacher_layer"], "<-", row["student_layer"], ":", row["projection"])
distiller.compile(optimizer="adam", metrics=["accuracy"])
distilled = distiller.fit(splits.train, validation_data=splits.validation, epochs=EPOCHS, verbose=2).history

alone = make_student()
alone.set_weights(initial)  # the same starting point
alone_history = training.train_student(splits, alone, EPOCHS, verbose=2)"""),
    new_code_cell("""display(Image(plots.training_curves({"distilled student": distilled, "student alone": alone_history},
                                    os.path.join(OUTPUT, "curves.png"))))"""),
    new_markdown_cell("## Evaluation"),
    new_code_cell("""rows = [dict(evaluation.evaluate(m, splits.test, splits.class_names), name=n)
        for n, m in (("teacher (ResNet50)", teacher), ("student alone", alone), ("distilled student", distiller.student))]
print(evaluation.format_table(rows))
display(Image(plots.comparison(rows, os.path.join(OUTPUT, "comparison.png"))))"""),
    new_markdown_cell("## Export: SavedModel and int8 TFLite, checked against Keras"),
    new_code_cell("""result = export.export_all(distiller, os.path.join(OUTPUT, "export"), formats=("saved_model", "int8"),
                           representative=splits.validation, test=splits.test, limit=500)
print(export.format_report(result["report"]))"""),
]

NOTEBOOK_2 = [
    new_markdown_cell(
        "# Choosing a distillation method\n\nThe same student, the same data and the same epochs, trained with "
        "several of kdistill's methods (logits: KD, DKD; features: FitNets, AT, SP, PKT). A short run: read the "
        "differences as a sketch, not a benchmark (see `benchmarks/accuracy.py` for seeds and error bars)."
    ),
    new_code_cell(SETUP),
    new_code_cell(DATA),
    new_code_cell(TEACHER),
    new_code_cell("""METHODS = {  # name: FeatureDistiller options
    "labels only": dict(taps={}, logits_loss="kl", alpha=0.0),
    "KD": dict(taps={}, logits_loss="kl", alpha=0.9),
    "DKD": dict(taps={}, logits_loss={"name": "dkd", "beta": 2.0}, alpha=0.9),
    "FitNets + KD": dict(taps=None, feature_loss="normalized_mse", tap_weights=10.0, alpha=0.9),
    "AT + KD": dict(taps=None, feature_loss="at", tap_weights=1000.0, alpha=0.9),
    "SP + KD": dict(taps=None, feature_loss="sp", tap_weights=100.0, alpha=0.9),
    "PKT + KD": dict(taps=None, feature_loss="pkt", tap_weights=10.0, alpha=0.9),
}
if QUICK:  # the test suite runs a labels-only and a feature method
    METHODS = {name: METHODS[name] for name in ("labels only", "AT + KD")}
EPOCHS = 1 if QUICK else 2
results, histories = {}, {}
for name, options in METHODS.items():
    keras.utils.set_random_seed(0)  # the same initial student for every method
    student = kdistill.students.get("mobilenet_v2", num_classes=splits.num_classes, width=0.35)
    distiller = kdistill.FeatureDistiller(teacher, student, temperature=4.0, **options)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    histories[name] = distiller.fit(splits.train, validation_data=splits.validation, epochs=EPOCHS, verbose=0).history
    results[name] = evaluation.evaluate(student, splits.test)["top1"]
    print(f"{name:<14} test top-1 {100 * results[name]:.2f}%")"""),
    new_code_cell("""import matplotlib.pyplot as plt
figure, axes = plt.subplots(1, 2, figsize=(12, 4))
names = list(results)
axes[0].barh(names, [100 * results[n] for n in names], color="tab:blue")
axes[0].set_xlabel("test top-1 (%)")
axes[0].set_xlim(max(0, 100 * min(results.values()) - 5), 100 * max(results.values()) + 2)
for name in names:
    axes[1].plot(range(1, EPOCHS + 1), histories[name]["val_accuracy"], marker="o", label=name)
axes[1].set_xlabel("epoch"); axes[1].set_ylabel("validation accuracy"); axes[1].legend(fontsize=8)
figure.tight_layout()
plt.show()"""),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--execute", action="store_true", help="run the notebooks and store their outputs")
    args = parser.parse_args()
    for name, cells in (
        ("distill_resnet50_into_mobilenetv2.ipynb", NOTEBOOK_1),
        ("choosing_a_distillation_method.ipynb", NOTEBOOK_2),
    ):
        notebook = new_notebook(
            cells=cells,
            metadata={
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                "colab": {"provenance": []},
            },
        )
        path = os.path.join(HERE, name)
        if args.execute:
            from nbclient import NotebookClient

            NotebookClient(
                notebook, timeout=1800, kernel_name="python3", resources={"metadata": {"path": os.getcwd()}}
            ).execute()
        nbformat.write(notebook, path)
        print("wrote", path)


if __name__ == "__main__":
    main()
