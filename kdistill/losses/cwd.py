"""Channel-wise distillation (CWD): each channel's map, softened over its positions, matched by KL.

Shu, Liu, Gao, Yan & Shen, "Channel-wise Knowledge Distillation for Dense
Prediction", ICCV 2021 (arXiv 2011.13256). Each channel of a feature map is
turned into a distribution over its H·W positions by a softmax with temperature
tau; the student matches the teacher's distribution channel by channel with
KL(teacher ‖ student), so it attends to where each channel fires most rather
than to its raw values.

Reference code: open-mmlab/mmrazor, `mmrazor/models/losses/cwd.py`,
`ChannelWiseDivergence.forward` (the authors' own irfanICMLL/TorchDistiller,
`SemSeg-distill/utils/criterion.py`, `CriterionCWD(norm_type="channel",
divergence="kl")`, computes the same value). Where we differ:

- layout: Keras maps are NHWC, the reference's NCHW; the softmax runs over the
  same H·W positions of each channel;
- reduction: the reference returns one number, the sum over the batch, channels
  and positions divided by C·N; `channel_wise_divergence` returns one value per
  sample (its sum over channels and positions divided by C), whose batch mean is
  the reference's loss. The reference's `loss_weight` is the distiller's tap weight.

mmrazor's configs use tau = 1 (tau = 4 in some) with loss weights of 3 to 10.
As a config (YAML); inside `FeatureDistiller` give the temperature in the dict,
because the distiller's own `temperature` (4 by default) is meant for KD:

    feature_loss: {name: cwd, temperature: 1.0}
    tap_weights: 3.0

On a segmenter's logit map `(batch, H, W, classes)` (the paper's segmentation
setting; mmrazor's `cwd_logits_pspnet` config distils `decode_head.conv_seg`
with tau = 1 and loss weight 3) the same name is a logits loss:
`FeatureDistiller(teacher, student, logits_loss={"name": "cwd", "temperature": 1.0},
logits_weight=3.0)`; the student's map is resized to the teacher's first (see
`kdistill.losses.dense`), the ignore label plays no part (the softmax runs over
every position of each class's map, as in the reference).

Example:
    >>> import numpy as np
    >>> feature = np.random.default_rng(0).normal(size=(2, 4, 4, 8)).astype("float32")
    >>> abs(float(ChannelWiseDivergence()(feature, feature))) < 1e-6
    True
    >>> float(ChannelWiseDivergence(temperature=4.0)(feature, -feature)) > 0
    True
"""

from __future__ import annotations

import keras
from keras import ops

from kdistill.losses._utils import check_temperature
from kdistill.losses.base import DistillationLoss
from kdistill.losses.feature_kl import check_same_shape
from kdistill.losses.registry import register

__all__ = ["channel_wise_divergence", "ChannelWiseDivergence"]


def _check_maps(teacher, student) -> None:
    check_same_shape(teacher, student, "channel_wise_divergence")
    if len(teacher.shape) == 2:
        raise ValueError(
            f"channel_wise_divergence (cwd) softmaxes each channel over its spatial positions, so it needs feature maps "
            f"(batch, H, W, channels); received vectors of shape {tuple(teacher.shape)}. Tap a feature map (a stage output "
            f"before global pooling), or use feature_loss='kl' (softmax over the channels) for vectors."
        )
    if len(teacher.shape) != 4:
        raise ValueError(
            f"channel_wise_divergence (cwd) needs feature maps of shape (batch, H, W, channels), received {tuple(teacher.shape)}."
        )


def channel_wise_divergence(teacher, student, temperature: float = 1.0):
    """Per-sample CWD: `tau² / C · Σ_c Σ_positions p_t,c · (log p_t,c − log p_s,c)`, `p_c = softmax(map_c / tau)` over H·W.

    The batch mean of these values is mmrazor's `ChannelWiseDivergence` with
    `loss_weight=1` on the same maps in NCHW (see the module docstring).

    Args:
        teacher: the teacher's feature map, `(batch, H, W, channels)`.
        student: the student's map projected to the teacher's shape.
        temperature: tau, the softening temperature, > 0 (1.0 in the authors' code).

    Returns:
        A float32 tensor of shape `(batch,)`.

    Raises:
        ValueError: for a temperature <= 0, maps of different shapes, or
            inputs that are not 4-D maps (vectors: use `feature_loss="kl"`).

    Example:
        >>> import numpy as np
        >>> teacher = np.zeros((1, 2, 2, 3), "float32"); teacher[0, 0, 0] = 100.0  # every channel fires at one position
        >>> student = np.zeros((1, 2, 2, 3), "float32")  # flat maps: KL = log 4 = 1.3863 per channel
        >>> round(float(channel_wise_divergence(teacher, student)[0]), 4)
        1.3863
    """
    check_temperature(temperature)
    teacher = ops.cast(teacher, "float32")
    student = ops.cast(student, "float32")
    _check_maps(teacher, student)
    # (batch, H*W, C): axis 1 holds each channel's positions.
    shape = (ops.shape(teacher)[0], -1, ops.shape(teacher)[-1])
    teacher_log_probs = ops.log_softmax(ops.reshape(teacher, shape) / temperature, axis=1)
    student_log_probs = ops.log_softmax(ops.reshape(student, shape) / temperature, axis=1)
    kl_per_channel = ops.sum(ops.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs), axis=1)
    return ops.mean(kl_per_channel, axis=-1) * (temperature**2)


@register("cwd", "channel_wise", kind="feature")
@keras.saving.register_keras_serializable(package="kdistill")
class ChannelWiseDivergence(DistillationLoss):
    """Channel-wise distillation (see `channel_wise_divergence`). Config names (feature kind): `"cwd"`, `"channel_wise"`.

    Args:
        temperature: tau, the softening temperature (1.0 as in mmrazor's `ChannelWiseDivergence`).

    Example:
        >>> ChannelWiseDivergence(temperature=4.0).get_config()["temperature"]
        4.0
    """

    #: on a segmenter's logit map (CWD's original setting) it is also a logits loss: `logits_loss={"name": "cwd",
    #: "temperature": 1.0}`
    dense_logits = "map"

    def __init__(self, temperature: float = 1.0, reduction="sum_over_batch_size", name="channel_wise_divergence"):
        check_temperature(temperature)
        super().__init__(channel_wise_divergence, reduction=reduction, name=name, temperature=float(temperature))
