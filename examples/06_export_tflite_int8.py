"""Export a distilled student to int8 TFLite and check its accuracy against the Keras model.

Writes three integer files: int8 with the converter's min/max activation ranges,
int8 with percentile-calibrated ranges, and int16x8 (int16 activations), and
prints how often each agrees with the Keras student.

    python examples/06_export_tflite_int8.py --quick
"""

import os

import common

import kdistill
from kdistill import export

args = common.arguments(__doc__)
splits = common.data(args)
teacher = common.teacher(args, splits)
student = kdistill.students.get("mobilenet_v2", num_classes=10, width=0.35)
distiller = kdistill.FeatureDistiller(
    teacher, student, taps=None, feature_loss="normalized_mse", tap_weights=10.0, alpha=0.9
)
distiller.compile(optimizer="adam", metrics=["accuracy"])
# splits.train reshuffles itself every epoch; shuffle=False just tells Keras not to try (it would warn).
distiller.fit(splits.train, epochs=common.epochs(args), verbose=2, shuffle=False)

folder = os.path.join(args.output_dir, "export")
# One SavedModel of the student, which every conversion below reads (each would otherwise export its own).
served = export.saved_model(distiller, os.path.join(folder, "serving"))
# Full-integer int8: activation ranges are calibrated on real images from the validation split.
int8 = export.tflite(
    distiller,
    os.path.join(folder, "student_int8.tflite"),
    quantize="int8",
    representative=splits.validation,
    saved_model_dir=served,
)
# The same, with each inner activation's range cut to its [0.01, 99.99] percentiles.
int8_percentile = export.tflite(
    distiller,
    os.path.join(folder, "student_int8_percentile.tflite"),
    quantize="int8",
    representative=splits.validation,
    calibration="percentile",
    percentile=99.99,
    saved_model_dir=served,
)
# Integer-only with int16 activations: closer to Keras, slower kernels.
int16x8 = export.tflite(
    distiller,
    os.path.join(folder, "student_int16x8.tflite"),
    quantize="int16x8",
    representative=splits.validation,
    saved_model_dir=served,
)
float32 = export.tflite(distiller, os.path.join(folder, "student_float32.tflite"), saved_model_dir=served)
files = {
    "tflite_float32": float32,
    "tflite_int8": int8,
    "tflite_int8_percentile": int8_percentile,
    "tflite_int16x8": int16x8,
}
report = export.parity_report(distiller, files, splits.test, limit=500, json_path=os.path.join(folder, "report.json"))
print(export.format_report(report))
