"""Multi-GPU distillation with MirroredStrategy (on a CPU-only machine: 2 logical CPU devices).

python examples/05_multi_gpu_mirrored.py --quick
"""

import tensorflow as tf

# Without GPUs, split the CPU into two logical devices so MirroredStrategy has 2 replicas.
if not tf.config.list_physical_devices("GPU"):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import common

import kdistill
from kdistill.run import distribute

args = common.arguments(__doc__)
devices = [d.name for d in tf.config.list_logical_devices("GPU")] or [
    d.name for d in tf.config.list_logical_devices("CPU")
]
strategy = tf.distribute.MirroredStrategy(devices)
print(f"{strategy.num_replicas_in_sync} replicas: {devices}")

# The batch size is the global batch: each replica gets batch / replicas images per step.
splits = common.data(args, batch_size=64 * strategy.num_replicas_in_sync)
teacher = common.teacher(args, splits)
with strategy.scope():  # student, projections, optimizer and metrics are made inside the scope
    student = kdistill.students.get("mobilenet_v2", num_classes=10, width=0.35)
    distiller = kdistill.FeatureDistiller(
        teacher, student, taps=None, feature_loss="normalized_mse", tap_weights=10.0, alpha=0.9
    )
    distiller.compile(optimizer="adam", metrics=["accuracy"])
# splits.train reshuffles itself every epoch; shuffle=False just tells Keras not to try (it would warn).
distiller.fit(
    splits.train, validation_data=common.validation(args, splits), epochs=common.epochs(args), verbose=2, shuffle=False
)
print("test top-1:", kdistill.evaluation.evaluate(distiller.student, splits.test)["top1"])
# Several machines: set TF_CONFIG on each, use distribute.get_strategy("multi_worker") and distribute.fit(...),
# because Keras' own fit fails under MultiWorkerMirroredStrategy.
print("strategies:", distribute.STRATEGIES)
