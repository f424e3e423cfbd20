"""A frozen teacher's inference graph with each BatchNormalization folded into the convolution before it.

In inference a BatchNormalization after a convolution is a per-channel scale and
shift, which can be folded into the convolution's kernel and bias:
`kernel * s`, `(bias - mean) * s + beta` with `s = gamma / sqrt(variance + eps)`.
The folded graph skips one pass over every feature map, and refolding the
weights on each call costs one pass over the kernels, so each pair is folded
only where that pays (`BatchNormFoldedConv.pays`): for a ResNet50 teacher on the
TensorFlow backend (CPU) the forward pass runs 1.14x as fast at 224x224 (batch
16) and unchanged at 32x32 (batch 64, 0.99x; `benchmarks/folding.py`). Outputs
agree with the unfolded teacher to float rounding.

The folded view shares the teacher's layers and variables: nothing is copied,
the fold is computed from the current weights on every call (weights loaded into
the teacher later are used as they are), and saving the teacher or the distiller
is unchanged. Layer names are kept, so taps on any layer, a folded
BatchNormalization included, still resolve.

Example:
    >>> import numpy as np, keras
    >>> from kdistill.models.folding import fold_batch_norm
    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(4, 3, use_bias=False, name="conv")(inputs)
    >>> x = keras.layers.BatchNormalization(name="bn")(x)
    >>> model = keras.Model(inputs, keras.layers.ReLU(name="relu")(x))
    >>> folded = fold_batch_norm(model)
    >>> [type(layer).__name__ for layer in folded.layers]
    ['InputLayer', 'BatchNormFoldedConv', 'FoldedAway', 'ReLU']
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    >>> bool(np.allclose(folded(x), model(x, training=False), atol=1e-5))
    True
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["fold_batch_norm", "foldable_pairs", "BatchNormFoldedConv", "FoldedAway", "Untracked"]

_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
#: the batch size `BatchNormFoldedConv.pays` assumes when the traced batch dimension is unknown
ASSUMED_BATCH = 32


class Untracked:
    """Holds objects out of Keras' tracking: layers and models whose variables belong to (and are saved with) another model."""

    def __init__(self, **objects):
        self.__dict__.update(objects)


class BatchNormFoldedConv(keras.layers.Layer):
    """A Conv2D or DepthwiseConv2D and the BatchNormalization after it as one convolution, for inference.

    It owns no variables: it reads the two layers' current weights and folds them
    on each call. Made by `fold_batch_norm`; not meant to be saved (it lives in
    the distiller's teacher view, which is rebuilt from the teacher).
    """

    def __init__(self, conv, batch_norm, **kwargs):
        kwargs.setdefault("name", conv.name)
        kwargs.setdefault("dtype", conv.dtype_policy)
        super().__init__(trainable=False, **kwargs)
        self._shared = Untracked(conv=conv, batch_norm=batch_norm)  # read, not owned
        self.built = True

    def call(self, inputs):
        conv, batch_norm = self._shared.conv, self._shared.batch_norm
        if not self.pays(inputs.shape):
            return batch_norm(conv(inputs), training=False)
        # The fold in float32 (variances are small numbers), then the compute dtype.
        as_float = lambda value: ops.cast(value, "float32")  # noqa: E731
        scale = ops.rsqrt(as_float(batch_norm.moving_variance) + batch_norm.epsilon)
        if batch_norm.gamma is not None:
            scale = scale * as_float(batch_norm.gamma)
        bias = -as_float(batch_norm.moving_mean) * scale
        if conv.use_bias:
            bias = bias + as_float(conv.bias) * scale
        if batch_norm.beta is not None:
            bias = bias + as_float(batch_norm.beta)
        kernel = as_float(conv.kernel)
        if isinstance(conv, keras.layers.DepthwiseConv2D):  # kernel (h, w, in, multiplier): output channel = in * multiplier + m
            kernel = kernel * ops.reshape(scale, (1, 1) + tuple(kernel.shape[2:]))
            outputs = ops.depthwise_conv(inputs, ops.cast(kernel, self.compute_dtype), strides=conv.strides, padding=conv.padding,
                                         data_format=conv.data_format, dilation_rate=conv.dilation_rate)
        else:
            outputs = conv.convolution_op(inputs, ops.cast(kernel * scale, self.compute_dtype))
        return outputs + ops.cast(bias, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return self._shared.conv.compute_output_shape(input_shape)

    def pays(self, input_shape, assumed_batch: int = ASSUMED_BATCH) -> bool:
        """Whether folding saves work for inputs of this shape (decided once, when the call is traced).

        Folding saves one read and write of the output map (batch x positions x
        channels) and costs one read and write of the kernel (its inputs per output
        channel x channels): it pays when the batch's output positions outnumber
        the kernel's inputs per output channel. Small maps deep in a network on
        small images keep their BatchNormalization.
        """
        conv = self._shared.conv
        output = self.compute_output_shape(tuple(input_shape))
        positions = (input_shape[0] or assumed_batch) * output[1] * output[2]
        per_output = conv.kernel.shape[0] * conv.kernel.shape[1] * (1 if isinstance(conv, keras.layers.DepthwiseConv2D) else conv.kernel.shape[2])
        return positions > per_output


class FoldedAway(keras.layers.Layer):
    """Stands where a folded BatchNormalization was (same name, so taps on it resolve): returns its input."""

    def __init__(self, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.built = True

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def _channels_last_axis(batch_norm) -> bool:
    axis = batch_norm.axis if isinstance(batch_norm.axis, (list, tuple)) else [batch_norm.axis]
    rank = len(batch_norm.input.shape)
    return len(axis) == 1 and axis[0] % rank == rank - 1


def foldable_pairs(model: keras.Model) -> dict[str, str]:
    """`{batch norm name: convolution name}` for each BatchNormalization fed only by a linear Conv2D/DepthwiseConv2D.

    The convolution must be called once, feed nothing else, keep channels last,
    and not be a model output; layers inside nested models are left alone.
    """
    pairs = {}
    outputs = {id(tensor) for tensor in model.outputs}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or len(layer._inbound_nodes) != 1:
            continue
        parents = layer._inbound_nodes[0].parent_nodes
        if len(parents) != 1:
            continue
        conv = parents[0].operation
        if (not isinstance(conv, _CONVOLUTIONS) or len(conv._inbound_nodes) != 1 or len(conv._outbound_nodes) != 1
                or getattr(conv.activation, "__name__", None) != "linear" or conv.data_format != "channels_last"
                or id(conv.output) in outputs or not _channels_last_axis(layer)):
            continue
        pairs[layer.name] = conv.name
    return pairs


def fold_batch_norm(model: keras.Model) -> keras.Model:
    """An inference-only functional view of `model` with BatchNormalizations folded into the convolutions before them.

    Args:
        model: a functional Keras model (e.g. a frozen teacher). It is not changed.

    Returns:
        A functional model sharing `model`'s layers and variables, or `model`
        itself when there is nothing to fold (or it is not functional). Call it
        in inference only: the folded layers use the moving statistics always.
    """
    if not isinstance(model, keras.Model) or not hasattr(model, "_nodes_by_depth"):
        return model
    pairs = foldable_pairs(model)
    if not pairs:
        return model
    convs = {conv: batch_norm for batch_norm, conv in pairs.items()}

    def substitute(layer):
        if layer.name in convs:
            return BatchNormFoldedConv(layer, model.get_layer(convs[layer.name]))
        if layer.name in pairs:
            return FoldedAway(name=layer.name, dtype=layer.dtype_policy)
        return layer  # shared as it is

    return keras.models.clone_model(model, clone_function=substitute)
