"""Turns a trained float Keras student into its quantization-aware twin.

The rewrite walks the functional graph once: each Conv2D/DepthwiseConv2D with
the BatchNormalization and ReLU/ReLU6 that follow it becomes one `QuantizedFoldedConv`
(named after the last layer it absorbed, so feature taps on stage outputs keep
working), Dense becomes `QuantizedDense`, Rescaling `QuantizedRescaling`,
Add, average pooling and free-standing ReLUs get an output quantizer (TFLite
rounds their results to int8), the input gets one, and shape-only layers
(padding, max pooling, flatten, reshape, dropout) are copied: TFLite runs them
at their input's scale. The float weights are copied over, so
the twin starts where the float student ended.
"""

from __future__ import annotations

import logging

import keras
import numpy as np

from kdistill.models import folding, graph, stages
from kdistill.quantize import layers as qlayers

logger = logging.getLogger(__name__)

#: layers copied unchanged: TFLite runs them on int8 at their input's scale, and they make no new values
PASS_THROUGH = ("InputLayer", "ZeroPadding2D", "MaxPooling2D", "GlobalMaxPooling2D", "Flatten", "Reshape", "Dropout")
#: layers whose outputs are new values (averages, sums, ReLUs): copied, with their output quantized as TFLite rounds it
REQUANTIZED = ("Add", "GlobalAveragePooling2D", "AveragePooling2D")
#: what the rewrite can quantize, for error messages
SUPPORTED = (
    "Conv2D and DepthwiseConv2D (followed by BatchNormalization and ReLU/ReLU6 or not), Dense (linear, relu, relu6), "
    "Add, ReLU/ReLU6, Rescaling (scalar), ZeroPadding2D, pooling, Flatten, Reshape, Dropout"
)

_QUANTIZED = (
    qlayers.ActivationQuantizer,
    qlayers.QuantizedFoldedConv,
    qlayers.QuantizedDense,
    qlayers.QuantizedRescaling,
    qlayers.QuantizedOutput,
)


def is_quantized(model: keras.Model) -> bool:
    """Whether `model` holds fake-quantized layers (made by `quantize_model`)."""
    return any(isinstance(layer, _QUANTIZED) for layer in getattr(model, "layers", []))


def check_quantized(model: keras.Model) -> None:
    """Raises a ValueError naming the fix when `model` is a float model."""
    if not is_quantized(model):
        raise ValueError(
            f"Model {model.name!r} is a float model, not a quantization-aware one: make one with "
            "`kdistill.quantize.quantize_model(student)` (CLI: `kdistill distill --quantize int8 --student-weights "
            "<float student.keras>`) and fine-tune it first."
        )


def _activation_name(layer) -> str | None:
    """'relu', 'relu6', 'linear' or None (anything else) for a layer's own activation."""
    function = getattr(layer, "activation", None)
    name = getattr(function, "__name__", None)
    return {"linear": "linear", "relu": "relu", "relu6": "relu6"}.get(name)


def _relu_kind(layer) -> str | None:
    """'relu' / 'relu6' when `layer` is a plain ReLU or ReLU6 layer, else None."""
    kind = type(layer).__name__
    if kind == "ReLU":
        config = layer.get_config()
        if config.get("negative_slope", 0.0) or config.get("threshold", 0.0):
            return None
        return {None: "relu", 6.0: "relu6"}.get(None if config.get("max_value") is None else float(config["max_value"]))
    if kind == "Activation":
        return {"relu": "relu", "relu6": "relu6"}.get(_activation_name(layer))
    return None


def _why_not(layer) -> str | None:
    """Why the rewrite cannot quantize `layer`, or None when it can."""
    kind = type(layer).__name__
    if kind in PASS_THROUGH or kind in REQUANTIZED or kind == "BatchNormalization":
        return None
    if kind == "Activation":
        return (
            None
            if _activation_name(layer) in ("linear", "relu", "relu6")
            else f"activation {_activation_name(layer) or layer.get_config()['activation']}"
        )
    if kind == "ReLU":
        return None if _relu_kind(layer) else "ReLU with a slope, threshold or cap other than 6"
    if kind in ("Conv2D", "DepthwiseConv2D"):
        config = layer.get_config()
        if (
            tuple(config.get("dilation_rate", (1, 1))) != (1, 1)
            or config.get("groups", 1) != 1
            or config.get("depth_multiplier", 1) != 1
        ):
            return "dilation, groups or depth multiplier"
        if config.get("data_format", "channels_last") != "channels_last":
            return "channels_first"
        return None if _activation_name(layer) else f"activation {config.get('activation')}"
    if kind == "Dense":
        return None if _activation_name(layer) else f"activation {layer.get_config().get('activation')}"
    if kind == "Rescaling":
        config = layer.get_config()
        return (
            None if np.ndim(config["scale"]) == 0 and np.ndim(config["offset"]) == 0 else "per-channel scale or offset"
        )
    return "no int8 rewrite for this layer type"


def unsupported_layers(model: keras.Model) -> list[str]:
    """'name (Type: reason)' for every layer `quantize_model` cannot rewrite."""
    problems = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            problems.append(
                f"{layer.name} ({type(layer).__name__}: a nested model; flatten it into one functional model)"
            )
        elif (reason := _why_not(layer)) is not None:
            problems.append(f"{layer.name} ({type(layer).__name__}: {reason})")
    return problems


def _batch_norm_weights(layer) -> dict:
    """gamma, beta, moving mean and variance of a BatchNormalization (ones/zeros where it has no scale or center)."""
    weights = {w.path.split("/")[-1]: keras.ops.convert_to_numpy(w) for w in layer.weights}
    channels = weights["moving_mean"].shape[0]
    return {
        "gamma": weights.get("gamma", np.ones(channels, "float32")),
        "beta": weights.get("beta", np.zeros(channels, "float32")),
        "moving_mean": weights["moving_mean"],
        "moving_variance": weights["moving_variance"],
        "epsilon": layer.epsilon,
    }


def _folded_unit(conv, chain: list, momentum: float) -> tuple[qlayers.QuantizedFoldedConv, dict]:
    """A QuantizedFoldedConv replacing `conv` and the BatchNormalization / ReLU layers in `chain`, and the float values of its weights."""
    config = conv.get_config()
    depthwise = type(conv).__name__ == "DepthwiseConv2D"
    norm = next((layer for layer in chain if type(layer).__name__ == "BatchNormalization"), None)
    relu = next((_relu_kind(layer) for layer in chain if _relu_kind(layer)), None)
    own = _activation_name(conv)
    activation = relu or (None if own == "linear" else own)
    unit = qlayers.QuantizedFoldedConv(
        depthwise=depthwise,
        filters=None if depthwise else config["filters"],
        kernel_size=config["kernel_size"],
        strides=config["strides"],
        padding=config["padding"],
        use_bias=config["use_bias"],
        epsilon=norm.epsilon if norm is not None else 1e-3,
        activation=activation,
        momentum=momentum,
        name=(chain[-1] if chain else conv).name,
    )
    values = {"kernel": keras.ops.convert_to_numpy(conv.kernel)}
    if config["use_bias"]:
        values["bias"] = keras.ops.convert_to_numpy(conv.bias)
    if norm is not None:
        values.update({k: v for k, v in _batch_norm_weights(norm).items() if k != "epsilon"})
    return unit, values


class _Graph:
    """The float model's own graph, read once: its nodes, who reads each tensor, which BatchNormalization folds into which convolution."""

    def __init__(self, model: keras.Model):
        self.nodes, self.readers = graph.model_graph(model)
        self.outputs = {id(t) for t in model.outputs}
        self.folds = {conv: batch_norm for batch_norm, conv in folding.foldable_pairs(model).items()}
        self.absorbed: set[int] = set()  # ids of the nodes a QuantizedFoldedConv took in

    def chain_after(self, conv_node) -> list:
        """The BatchNormalization that folds into `conv_node` (`kdistill.models.folding.foldable_pairs`), then a ReLU(6) only it feeds."""
        chain, node = [], conv_node
        if _activation_name(conv_node.operation) != "linear":  # a conv with its own ReLU: nothing after it folds in
            return chain
        reader = graph.only_reader(node.output_tensors[0], self.readers, self.outputs)
        if reader is not None and reader.operation.name == self.folds.get(conv_node.operation.name):
            chain.append(reader)
            node = reader
        reader = graph.only_reader(node.output_tensors[0], self.readers, self.outputs)
        if reader is not None and _relu_kind(reader.operation):
            chain.append(reader)
        self.absorbed.update(id(n) for n in chain)
        return chain


def _functional_float_model(model: keras.Model) -> keras.Model:
    """`model` as a functional graph (a built Sequential converted), after refusing what cannot be quantized."""
    if isinstance(model, keras.Sequential) and model.built:
        # one input tensor, not a list of one: no structure warning on calls
        inputs = graph.call_inputs(model)
        model = keras.Model(inputs, model.outputs, name=model.name)  # the same layers, as a functional graph
    if not hasattr(model, "_nodes_by_depth"):
        raise ValueError(
            f"quantize_model needs a functional Keras model (keras.Model(inputs, outputs)); {model.name!r} is "
            f"{type(model).__name__}. Rebuild it functionally."
        )
    if is_quantized(model):
        raise ValueError(f"Model {model.name!r} is already quantization-aware.")
    problems = unsupported_layers(model)
    if problems:
        raise ValueError(
            f"Cannot quantize {len(problems)} layer(s) of {model.name!r}: "
            + "; ".join(problems)
            + f". The int8 rewrite supports {SUPPORTED}. Replace those layers, or export with post-training "
            "calibration instead (`kdistill export --formats int8`)."
        )
    return model


def _rewrite(node, args: tuple, kwargs: dict, graph: _Graph, momentum: float) -> tuple:
    """The twin's output for a float node, the float node whose outputs it stands for, and `[(unit, its float weights)]`."""
    layer = node.operation
    kind = type(layer).__name__
    if kind in ("Conv2D", "DepthwiseConv2D"):
        chain = graph.chain_after(node)
        unit, values = _folded_unit(layer, [n.operation for n in chain], momentum)
        return unit(*args), (chain[-1] if chain else node), [(unit, values)]
    if kind == "Dense":
        activation = _activation_name(layer)
        unit = qlayers.QuantizedDense(
            layer.units,
            use_bias=layer.use_bias,
            activation=None if activation == "linear" else activation,
            momentum=momentum,
            name=layer.name,
        )
        values = {
            "kernel": keras.ops.convert_to_numpy(layer.kernel),
            **({"bias": keras.ops.convert_to_numpy(layer.bias)} if layer.use_bias else {}),
        }
        return unit(*args), node, [(unit, values)]
    if kind == "Rescaling":
        config = layer.get_config()
        return (
            qlayers.QuantizedRescaling(
                float(config["scale"]), float(config["offset"]), momentum=momentum, name=layer.name
            )(*args),
            node,
            [],
        )
    if kind in REQUANTIZED or _relu_kind(layer) or kind == "Activation" and _activation_name(layer) != "linear":
        clone = type(layer).from_config({**layer.get_config(), "name": f"{layer.name}_float"})
        return qlayers.QuantizedOutput(clone, momentum=momentum, name=layer.name)(*args), node, []
    if kind == "BatchNormalization":
        raise ValueError(
            f"BatchNormalization {layer.name!r} does not directly follow a convolution whose output only it reads, "
            "so it cannot be folded. Put it right after a Conv2D/DepthwiseConv2D."
        )
    return type(layer).from_config(layer.get_config())(*args, **kwargs), node, []  # shape-only layers, copied


def _assign_float_weights(weights: list) -> None:
    """Copies the float model's values into the twin's units (`[(unit, {weight name: value})]`)."""
    for unit, values in weights:
        for variable in unit.weights:
            key = variable.path.split("/")[-1]
            if key in values:
                variable.assign(values[key].astype("float32"))


def quantize_model(
    model: keras.Model, momentum: float = 0.99, calibration_images=None, calibration_batch: int = 64
) -> keras.Model:
    """The quantization-aware twin of a trained float functional model (see the module docstring).

    Args:
        model: a functional Keras model (e.g. a distilled MobileNetV2 student), or a built Sequential one.
        momentum: moving-average momentum of the activation ranges.
        calibration_images: optional array of real images run through the twin
            in training mode to set every range before fine-tuning (else the first
            training batch sets them).
        calibration_batch: batch size of that calibration pass.

    Returns:
        A new functional model with the float model's weights; unfrozen, not compiled.

    Raises:
        ValueError: for a subclassed model, or layers the rewrite cannot quantize (all listed).

    Example:
        >>> import kdistill
        >>> student = kdistill.students.get("mobilenet_v2", num_classes=10, width=0.35)
        >>> twin = quantize_model(student)
        >>> is_quantized(twin), twin.output_shape
        (True, (None, 10))
    """
    stage_table = stages.attached(model)  # a flattened KerasHub model's stages go with its twin
    model = _functional_float_model(model)
    graph = _Graph(model)
    mapped, weights, inputs = {}, [], []
    for tensor in model.inputs:
        inputs.append(keras.Input(shape=tensor.shape[1:], dtype=tensor.dtype, name=tensor.name))
        mapped[id(tensor)] = qlayers.ActivationQuantizer(momentum=momentum, name=f"{tensor.name}_quantizer")(inputs[-1])
    for node in graph.nodes:
        if node.is_input or id(node) in graph.absorbed:
            continue
        args, kwargs = node.arguments.fill_in(mapped)
        result, last, unit_weights = _rewrite(node, args, kwargs, graph, momentum)
        weights += unit_weights
        for old, new in zip(last.output_tensors, keras.tree.flatten(result)):
            mapped[id(old)] = new
    twin = keras.Model(
        inputs if len(inputs) > 1 else inputs[0],
        [mapped[id(t)] for t in model.outputs] if len(model.outputs) > 1 else mapped[id(model.outputs[0])],
        name=f"{model.name}_int8",
    )
    if stage_table:
        stages.attach(twin, stage_table)
    _assign_float_weights(weights)
    if calibration_images is not None:
        calibrate(twin, calibration_images, calibration_batch)
    logger.info("Quantization-aware twin of %s: %d layers (from %d)", model.name, len(twin.layers), len(model.layers))
    return twin


def calibrate(model: keras.Model, images, batch_size: int = 64) -> None:
    """Sets every activation range of a quantization-aware model from real images (moving averages, training mode).

    Only the quantizers' ranges change: folded BatchNormalization statistics are frozen.
    """
    check_quantized(model)
    images = np.asarray(images)
    if len(images) == 0:
        raise ValueError("calibrate needs at least one image.")
    for start in range(0, len(images), batch_size):
        model(images[start : start + batch_size], training=True)
