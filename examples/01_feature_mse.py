"""Feature distillation: the student's middle stages learn the teacher's maps through 1x1 projections (FitNets MSE).

python examples/01_feature_mse.py --quick
"""

import common

import kdistill

args = common.arguments(__doc__)
splits = common.data(args)
teacher = common.teacher(args, splits)
student = kdistill.students.get("mobilenet_v2", num_classes=10, width=0.35)

# Teacher layer -> student layer. Shapes differ (e.g. 4x4x512 vs 4x4x32): a 1x1 Conv + BatchNorm
# projection per tap maps the student's map to the teacher's shape; it trains with the student.
taps = {"conv3_block4_out": "block_6_expand_relu", "conv4_block6_out": "block_13_expand_relu"}
distiller = kdistill.FeatureDistiller(teacher, student, taps=taps, feature_loss="mse", logits_loss=None, alpha=0.5)
for row in distiller.projection_summary():
    print(
        f"{row['teacher_layer']} {row['teacher_shape']} <- {row['student_layer']} {row['student_shape']}: {row['projection']}"
    )

distiller.compile(optimizer="adam", metrics=["accuracy"])
# splits.train reshuffles itself every epoch; shuffle=False just tells Keras not to try (it would warn).
history = distiller.fit(
    splits.train, validation_data=common.validation(args, splits), epochs=common.epochs(args), verbose=2, shuffle=False
)
print(
    "feature losses per epoch:",
    {k: [round(v, 4) for v in values] for k, values in history.history.items() if k.startswith("feat_")},
)
print("test top-1:", kdistill.evaluation.evaluate(distiller.student, splits.test)["top1"])
