"""Adversarial distillation (MEAL V2): a small discriminator tells the teacher's outputs from the student's.

Shen & Savvides, "MEAL V2: Boosting Vanilla ResNet-50 to 80%+ Top-1 Accuracy on
ImageNet without Tricks", 2020; reference code szq0214/MEAL-V2
(`models/discriminator.py`, `loss.py: discriminatorLoss`, `train.py`). Use it
beside a soft-target loss: `logits_loss=[("kl", 1.0), ("meal_v2", 1.0)]`. The
discriminator is a weight of the distiller (trained, saved, backed up and
resumed with it), never of the student, so no export carries it.

Example:
    >>> import numpy as np
    >>> loss = AdversarialLoss()
    >>> teacher = np.random.default_rng(0).normal(size=(4, 10)).astype("float32")
    >>> student = np.random.default_rng(1).normal(size=(4, 10)).astype("float32")
    >>> tuple(loss(teacher, student).shape)  # one value per sample
    (4,)
    >>> [tuple(w.shape) for w in loss.discriminator.weights]  # 10 -> 5 -> 2 -> 2
    [(10, 5), (5,), (5, 2), (2,), (2, 2), (2,)]
"""

from __future__ import annotations

import math

import keras
from keras import ops

from kdistill.errors import check_number
from kdistill.losses._utils import pool_to_vectors, same_batch
from kdistill.losses.registry import register

__all__ = ["Discriminator", "AdversarialLoss", "discriminator_loss", "scale_gradient", "INPUTS"]

#: what the discriminator reads: "logits" (train.py), "probabilities" (FKD_train.py: softmax at T = 1), "features"
#: (pooled tap maps)
INPUTS = ("logits", "probabilities", "features")

# Discriminator targets, as discriminatorLoss lays them out: student rows [1, 0], teacher rows [0, 1].
STUDENT_TARGET, TEACHER_TARGET = (1.0, 0.0), (0.0, 1.0)


def scale_gradient(x, scale: float):
    """Identity forward; the gradient flowing back through it is multiplied by `scale` (−1: gradient reversal).

    Written in `keras.ops` only, so it works on every backend and inside any
    traced step: `stop_gradient(x · (1 − scale)) + scale · x` has the value `x`
    and the derivative `scale`.

    Example:
        >>> import numpy as np
        >>> float(scale_gradient(np.float32(3.0), -1.0))
        3.0
    """
    if scale == 1.0:
        return x
    return ops.stop_gradient(x * (1.0 - scale)) + scale * x


def _bce_with_logits(logits, targets):
    """Elementwise binary cross-entropy on logits, in PyTorch's stable form `max(x, 0) − x·y + log(1 + e^−|x|)`."""
    return ops.relu(logits) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits)))


def discriminator_loss(student_outputs, teacher_outputs):
    """Each sample's share of MEAL V2's discriminator loss, from the discriminator's `(batch, 2)` outputs.

    The authors' `discriminatorLoss` stacks `[student; teacher]` (2N rows), sets
    the targets `[1, 0]` for the N student rows and `[0, 1]` for the N teacher
    rows, and takes `BCEWithLogitsLoss()` (the mean over all 2N × 2 entries).
    Sample `i` gets the mean over its own four entries (student row `i`,
    teacher row `i`), so the batch mean is exactly the authors' scalar.

    Args:
        student_outputs: discriminator outputs on the student's rows, `(batch, 2)`.
        teacher_outputs: discriminator outputs on the teacher's rows, `(batch, 2)`.

    Returns:
        `(batch,)` float32.
    """
    student_outputs, teacher_outputs = ops.cast(student_outputs, "float32"), ops.cast(teacher_outputs, "float32")
    student_terms = ops.sum(
        _bce_with_logits(student_outputs, ops.convert_to_tensor(STUDENT_TARGET, "float32")), axis=-1
    )
    teacher_terms = ops.sum(
        _bce_with_logits(teacher_outputs, ops.convert_to_tensor(TEACHER_TARGET, "float32")), axis=-1
    )
    return (student_terms + teacher_terms) / 4.0


def _torch_default_initializer(fan_in: int) -> keras.initializers.Initializer:
    """PyTorch's default for Conv2d weights and biases: U(−1/√fan_in, 1/√fan_in) (kaiming_uniform with a = √5)."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


@keras.saving.register_keras_serializable(package="kdistill")
class Discriminator(keras.layers.Layer):
    """MEAL V2's discriminator: widths `C → C//K → C//K² → 2`, a ReLU after every layer (the last one too).

    The authors apply three 1x1 convolutions to the `(N, C, 1, 1)` view of a
    `(N, C)` input; on vectors those are Dense layers. Their last layer is also
    followed by a ReLU, so its two outputs (the logits fed to the binary
    cross-entropy) are never negative; this is kept by default. Weights start
    as PyTorch's default initialisation does. The authors use `K = 8` for 1000
    ImageNet classes (1000 → 125 → 15 → 2); `K = 2` suits 10 to 100 classes.

    That final ReLU can silence an output for good: where its pre-activation is
    negative for every input, the output is 0 and gets no gradient, so `D`
    never learns to name that side. Narrow layers make this likely (counts in
    `benchmarks/README.md`, "Notes behind defaults"). `output_relu=False` drops it.

    Args:
        reduction_factor: `K`, by which each hidden layer divides the width.
        output_relu: the authors' ReLU after the last layer (True).

    Example:
        >>> import numpy as np
        >>> d = Discriminator(reduction_factor=8)
        >>> tuple(d(np.zeros((3, 1000), "float32")).shape), [tuple(w.shape) for w in d.weights][::2]
        ((3, 2), [(1000, 125), (125, 15), (15, 2)])
    """

    def __init__(self, reduction_factor: int = 2, output_relu: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.reduction_factor = int(
            check_number(
                "reduction_factor", reduction_factor, integer=True, positive=True, meaning="the authors' K, e.g. 2 or 8"
            )
        )
        self.output_relu = bool(output_relu)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        widths = [channels // self.reduction_factor, channels // self.reduction_factor**2, 2]
        if min(widths) < 1:
            raise ValueError(
                f"A discriminator with reduction_factor={self.reduction_factor} on {channels} inputs would have the widths "
                f"{channels} -> {widths[0]} -> {widths[1]} -> 2; use a reduction_factor of at most {max(1, math.isqrt(channels))}."
            )
        self.dense_layers = []
        fan_in = channels
        for index, width in enumerate(widths, start=1):
            initializer = _torch_default_initializer(fan_in)
            activation = "relu" if index < len(widths) or self.output_relu else None
            layer = keras.layers.Dense(
                width,
                activation=activation,
                kernel_initializer=initializer,
                bias_initializer=initializer,
                dtype=self.dtype_policy,
                name=f"dense{index}",
            )
            layer.build((None, fan_in))
            self.dense_layers.append(layer)
            fan_in = width
        self.built = True

    def call(self, inputs):
        x = inputs
        for layer in self.dense_layers:
            x = layer(x)
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2)

    def get_config(self):
        config = super().get_config()
        config.update({"reduction_factor": self.reduction_factor, "output_relu": self.output_relu})
        return config


@register("meal_v2", "adversarial", kind="logits")
@register("adversarial_feature", kind="feature", inputs="features", output_relu=False)
@keras.saving.register_keras_serializable(package="kdistill")
class AdversarialLoss(keras.layers.Layer):
    """MEAL V2's discriminator loss, with the student's gradient reversed so that it learns to fool the discriminator.

    The discriminator `D` (see `Discriminator`) reads the teacher's and the
    student's outputs of one batch and is trained to label them: binary
    cross-entropy on `D([student; teacher])` with the targets `[1, 0]` for
    student rows and `[0, 1]` for teacher rows (`discriminator_loss`, the
    authors' `discriminatorLoss`). The teacher's outputs reach `D` behind a
    stop-gradient. The student's pass through `scale_gradient` first, so in the
    same backward pass `D` descends the loss while the student receives
    `student_gradient_scale` times its gradient: with the default −1 the student
    ascends it, i.e. moves its outputs where `D` takes them for the teacher's.

    Why gradient reversal in one step rather than alternating updates with a
    second optimizer: the reversal is plain `keras.ops`, so the loss trains
    through the distiller's ordinary `compute_loss` / `fit` path with its one
    optimizer on TensorFlow, JAX and PyTorch and under `tf.distribute`, with no
    backend-specific train step. The discriminator therefore shares the
    distiller's optimizer and learning rate (as in the authors' `train.py`,
    where one SGD holds both and `_set_learning_rate` overwrites the
    discriminator's `--d_lr`), and its gradient is scaled by the weight the loss
    gets in the total (`alpha · logits_weight · weight`).

    Paper/code note: the authors' `train.py` adds the discriminator loss to the
    KD loss and back-propagates once without any reversal, so their student
    *descends* the discriminator's loss as well (the author describes it as a
    regulariser that keeps the student's outputs from becoming identical to
    the teacher ensemble's: szq0214/MEAL-V2 issues #2 and #6).
    `student_gradient_scale=1.0` reproduces that; `0.0` trains the
    discriminator alone (a monitor). The reversal itself is the authors' own
    option in MEAL v1 (AaronHeee/MEAL, `models/discriminator.py`:
    `GradReverse`, `--grl`, off by default there). With several teachers,
    the authors feed `D` the mean of the teachers' logits.

    Reading the game: with reversal, `D` and the student play minimax, so
    `D`'s accuracy on one side alone swings (it may call everything
    "student" for a while); the mean of its two accuracies
    (`discriminator_accuracy`) tells whether it can tell them apart, 0.5 when
    it cannot. A `D` far ahead (large margins) gives the student vanishing
    gradients through the saturated sigmoid, as in a minimax GAN; the loss's
    weight sets how hard the student pushes back.

    Config names: `"meal_v2"` / `"adversarial"` (logits) and
    `"adversarial_feature"` (a tap loss: `D` reads global-average-pooled
    teacher and projected student features, without the final ReLU, which on
    narrow layers and non-negative pooled features often leaves `D` stuck; this
    variant is kdistill's, MEAL V2 discriminates outputs only). As a config entry:

        logits_loss: [{name: kl, weight: 1.0}, {name: meal_v2, weight: 1.0}]

    Args:
        inputs: what `D` reads: `"logits"` (the authors' `train.py`: raw student
            logits and teacher logits), `"probabilities"` (their
            `FKD_train.py`: softmax at temperature 1 of both), `"features"`
            (pooled feature maps; vectors pass through).
        reduction_factor: `K` of the discriminator's widths `C → C//K → C//K² → 2`.
        output_relu: the authors' ReLU on the discriminator's outputs (see
            `Discriminator` for when it stalls `D`; False drops it).
        student_gradient_scale: factor on the gradient the student receives
            through `D`: −1 (gradient reversal, the student fools `D`), +1 (the
            authors' code), 0 (none).

    Returns (when called):
        The per-sample loss `(batch,)`; its batch mean is the authors' scalar.
    """

    uses_labels = False

    def __init__(
        self,
        inputs: str = "logits",
        reduction_factor: int = 2,
        student_gradient_scale: float = -1.0,
        output_relu: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if inputs not in INPUTS:
            raise ValueError(f"inputs must be one of {', '.join(INPUTS)}; received {inputs!r}.")
        check_number(
            "student_gradient_scale", student_gradient_scale, meaning="-1.0 reverses, 1.0 is the authors' code"
        )
        self.inputs = inputs
        self.reduction_factor = reduction_factor
        self.student_gradient_scale = float(student_gradient_scale)
        self.output_relu = bool(output_relu)
        self.discriminator = Discriminator(reduction_factor, output_relu=self.output_relu, name="discriminator")

    def build(self, teacher_shape, student_shape=None, labels_shape=None):
        self.discriminator.build((None, int(teacher_shape[-1])))
        self.built = True

    def _prepare(self, outputs):
        """What the discriminator reads of one model's outputs, `(batch, C)` float32."""
        vectors = pool_to_vectors(outputs)
        return ops.softmax(vectors, axis=-1) if self.inputs == "probabilities" else vectors

    def discriminator_outputs(self, teacher, student):
        """`D`'s `(batch, 2)` outputs on the teacher's and the student's rows, in one forward over `[student; teacher]`."""
        same_batch(teacher, student, "The adversarial loss")
        teacher_inputs = ops.stop_gradient(self._prepare(teacher))
        student_inputs = scale_gradient(self._prepare(student), self.student_gradient_scale)
        outputs = ops.cast(self.discriminator(ops.concatenate([student_inputs, teacher_inputs], axis=0)), "float32")
        batch = ops.shape(student_inputs)[0]
        return outputs[batch:], outputs[:batch]

    def call(self, teacher, student, labels=None):
        teacher_outputs, student_outputs = self.discriminator_outputs(teacher, student)
        return discriminator_loss(student_outputs, teacher_outputs)

    def discriminator_accuracy(self, teacher, student):
        """`(accuracy on teacher outputs, accuracy on student outputs)`, float32 scalars; 0.5 is chance.

        A row counts as right when `D`'s output for its own class is the larger
        of the two, and as half right on a tie (the final ReLU makes both
        outputs 0 for some rows).

        Example:
            >>> import numpy as np
            >>> loss = AdversarialLoss()
            >>> z = np.random.default_rng(0).normal(size=(8, 10)).astype("float32")
            >>> teacher_accuracy, student_accuracy = loss.discriminator_accuracy(z, z)
            >>> float(teacher_accuracy + student_accuracy)  # identical outputs: what D gets right on one side it gets wrong on the other
            1.0
        """
        if not self.built:
            self.build(tuple(teacher.shape))
        teacher_outputs, student_outputs = self.discriminator_outputs(
            ops.stop_gradient(teacher), ops.stop_gradient(student)
        )

        def accuracy(outputs, own):
            margin = outputs[:, own] - outputs[:, 1 - own]
            return ops.mean(ops.cast(margin > 0, "float32") + 0.5 * ops.cast(margin == 0, "float32"))

        return accuracy(teacher_outputs, 1), accuracy(student_outputs, 0)

    def compute_output_shape(self, teacher_shape, student_shape=None, labels_shape=None):
        return (teacher_shape[0],)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "inputs": self.inputs,
                "reduction_factor": self.reduction_factor,
                "student_gradient_scale": self.student_gradient_scale,
                "output_relu": self.output_relu,
            }
        )
        return config
