"""Distilling into your own Keras model: any functional model that returns logits can be the student.

python examples/04_your_own_student.py --quick
"""

import common
import keras

import kdistill


def tiny_cnn(num_classes: int = 10) -> keras.Model:
    """Takes raw pixels in [0, 255] (like kdistill's models) and returns logits."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    for index, width in enumerate((32, 64, 128), start=1):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU(name=f"block{index}")(x)  # named, so it can be tapped
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name="tiny_cnn")


args = common.arguments(__doc__)
splits = common.data(args)
teacher = common.teacher(args, splits)
student = tiny_cnn()

# kdistill.taps.stage_outputs lists the candidate layers of any functional model.
print("student stages:", kdistill.taps.stage_outputs(student))
distiller = kdistill.FeatureDistiller(
    teacher,
    student,
    taps={"conv3_block4_out": "block2", "conv4_block6_out": "block3"},
    feature_loss="normalized_mse",
    tap_weights=10.0,
    alpha=0.9,
)
distiller.compile(optimizer="adam", metrics=["accuracy"])
# splits.train reshuffles itself every epoch; shuffle=False just tells Keras not to try (it would warn).
distiller.fit(
    splits.train, validation_data=common.validation(args, splits), epochs=common.epochs(args), verbose=2, shuffle=False
)
print(
    f"{student.count_params():,} parameters; test top-1 {kdistill.evaluation.evaluate(student, splits.test)['top1']:.4f}"
)
