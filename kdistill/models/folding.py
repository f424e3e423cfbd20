"""A frozen teacher's inference graph with each BatchNormalization folded into the convolution before it.

In inference a BatchNormalization after a convolution is a per-channel scale and
shift, which can be folded into the convolution's kernel and bias:
`kernel * s`, `(bias - mean) * s + beta` with `s = gamma / sqrt(variance + eps)`.
The folded graph skips one pass over every feature map, and refolding the
weights on each call costs one pass over the kernels, so each pair is folded
only where that pays (`FoldedConvView.pays`; `benchmarks/README.md` has the
timings of `benchmarks/folding.py`). Outputs agree with the unfolded teacher to
float rounding.

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
    ['InputLayer', 'FoldedConvView', 'FoldedAway', 'ReLU']
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    >>> bool(np.allclose(folded(x), model(x, training=False), atol=1e-5))
    True
"""

from __future__ import annotations

import collections

import keras
from keras import ops

from kdistill.models.graph import model_graph, only_reader

__all__ = [
    "fold_batch_norm",
    "foldable_pairs",
    "folded_kernel_and_bias",
    "FoldedConvView",
    "FoldedAway",
    "Untracked",
]

_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
#: the batch size `FoldedConvView.pays` assumes when the traced batch dimension is unknown
ASSUMED_BATCH = 32


class Untracked:
    """Holds objects out of Keras' tracking: layers and models whose variables belong to (and are saved with) another model."""

    def __init__(self, **objects):
        self.__dict__.update(objects)


def folded_kernel_and_bias(
    kernel, moving_mean, moving_variance, epsilon: float, gamma=None, beta=None, bias=None, depthwise: bool = False
):
    """`(kernel * s, (bias - mean) * s + beta)` with `s = gamma / sqrt(variance + epsilon)`: a BatchNormalization folded into a convolution.

    The one place the fold is computed (`keras.ops`, so it traces and trains):
    the teacher's folded view (`FoldedConvView`) and the quantization-aware
    `kdistill.quantize.QuantizedFoldedConv` both call it.

    Args:
        kernel: the convolution's kernel, `(h, w, in, out)`, or `(h, w, in, multiplier)` with `depthwise`
            (output channel `in * multiplier + m`).
        moving_mean, moving_variance, epsilon: the BatchNormalization's statistics.
        gamma, beta: its scale and offset (None where it has none: `scale=False`, `center=False`).
        bias: the convolution's own bias (None without one).
        depthwise: whether `kernel` is a DepthwiseConv2D's.

    Example:
        >>> import numpy as np
        >>> kernel, bias = folded_kernel_and_bias(np.ones((1, 1, 1, 2), "float32"), np.array([1.0, 0.5], "float32"),
        ...                                       np.array([4.0, 1.0], "float32"), 0.0, gamma=np.array([2.0, 1.0], "float32"),
        ...                                       beta=np.array([0.0, 1.0], "float32"))
        >>> ops.convert_to_numpy(kernel).ravel().tolist(), ops.convert_to_numpy(bias).tolist()
        ([1.0, 1.0], [-1.0, 0.5])
    """
    root = ops.sqrt(moving_variance + epsilon)
    scale = gamma / root if gamma is not None else 1.0 / root
    shift = (bias - moving_mean) * scale if bias is not None else -moving_mean * scale
    if beta is not None:
        shift = shift + beta
    if depthwise:
        return kernel * ops.reshape(scale, (1, 1) + tuple(kernel.shape[2:])), shift
    return kernel * scale, shift


class FoldedConvView(keras.layers.Layer):
    """A float view of a Conv2D or DepthwiseConv2D and the BatchNormalization after it as one convolution, for inference.

    It owns no variables: it reads the two layers' current weights and folds them
    on each call (`kdistill.quantize.QuantizedFoldedConv`, by contrast, owns its
    weights, trains them and quantizes them to int8). Made by `fold_batch_norm`; not meant to be saved (it lives in
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
        as_float = lambda value: None if value is None else ops.cast(value, "float32")  # noqa: E731
        depthwise = isinstance(conv, keras.layers.DepthwiseConv2D)
        kernel, bias = folded_kernel_and_bias(
            as_float(conv.kernel),
            as_float(batch_norm.moving_mean),
            as_float(batch_norm.moving_variance),
            batch_norm.epsilon,
            gamma=as_float(batch_norm.gamma),
            beta=as_float(batch_norm.beta),
            bias=as_float(conv.bias) if conv.use_bias else None,
            depthwise=depthwise,
        )
        kernel = ops.cast(kernel, self.compute_dtype)
        if depthwise:
            outputs = ops.depthwise_conv(
                inputs,
                kernel,
                strides=conv.strides,
                padding=conv.padding,
                data_format=conv.data_format,
                dilation_rate=conv.dilation_rate,
            )
        else:
            outputs = conv.convolution_op(inputs, kernel)
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
        per_output = (
            conv.kernel.shape[0]
            * conv.kernel.shape[1]
            * (1 if isinstance(conv, keras.layers.DepthwiseConv2D) else conv.kernel.shape[2])
        )
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


def _channels_last_axis(batch_norm, rank: int) -> bool:
    axis = batch_norm.axis if isinstance(batch_norm.axis, (list, tuple)) else [batch_norm.axis]
    return len(axis) == 1 and axis[0] % rank == rank - 1


def foldable_pairs(model: keras.Model) -> dict[str, str]:
    """`{batch norm name: convolution name}` for each BatchNormalization fed only by a linear Conv2D/DepthwiseConv2D.

    Both must be called once in `model`, the convolution must feed nothing else,
    keep channels last and not be a model output; layers inside nested models
    are left alone. The one walk that finds what folds: `fold_batch_norm` and
    `kdistill.quantize.quantize_model` both use it.
    """
    nodes, readers = model_graph(model)
    calls = collections.Counter(id(node.operation) for node in nodes)
    outputs = {id(tensor) for tensor in model.outputs}
    pairs = {}
    for node in nodes:
        conv = node.operation
        if (
            not isinstance(conv, _CONVOLUTIONS)
            or calls[id(conv)] != 1
            or getattr(conv.activation, "__name__", None) != "linear"
            or conv.data_format != "channels_last"
        ):
            continue
        reader = only_reader(node.output_tensors[0], readers, outputs)
        batch_norm = reader.operation if reader is not None else None
        if (
            isinstance(batch_norm, keras.layers.BatchNormalization)
            and calls[id(batch_norm)] == 1
            and _channels_last_axis(batch_norm, len(node.output_tensors[0].shape))
        ):
            pairs[batch_norm.name] = conv.name
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
            return FoldedConvView(layer, model.get_layer(convs[layer.name]))
        if layer.name in pairs:
            return FoldedAway(name=layer.name, dtype=layer.dtype_policy)
        return layer  # shared as it is

    return keras.models.clone_model(model, clone_function=substitute)
