"""Logits distillation (Hinton KD): the student matches the teacher's softened class distribution.

python examples/02_logits_kd.py --quick
"""

import common

import kdistill

args = common.arguments(__doc__)
splits = common.data(args)
teacher = common.teacher(args, splits)
student = kdistill.students.get("mobilenet_v2", num_classes=10, width=0.35)

# taps={} distils logits only. The temperature T softens both distributions (the "dark knowledge" in
# the small probabilities); the KL term is multiplied by T² so its gradients keep their scale.
distiller = kdistill.FeatureDistiller(teacher, student, taps={}, logits_loss="kl", temperature=4.0, alpha=0.9)
distiller.compile(optimizer="adam", metrics=["accuracy"])
# splits.train reshuffles itself every epoch; shuffle=False just tells Keras not to try (it would warn).
history = distiller.fit(
    splits.train, validation_data=common.validation(args, splits), epochs=common.epochs(args), verbose=2, shuffle=False
)
print("kd_loss per epoch:", [round(v, 4) for v in history.history["kd_loss"]])
print("test top-1:", kdistill.evaluation.evaluate(distiller.student, splits.test)["top1"])
