"""Feature taps: which intermediate layers are read, and a model that reads them.

A *tap* pairs a teacher layer with a student layer (`{"conv3_block4_out":
"block_6_expand_relu"}`). `feature_model` builds one multi-output submodel per
network so that a single forward pass yields every tapped map plus the logits.

Stage outputs (the last layer at each resolution, with the total stride) are
declared beside each network's builder, like timm's `feature_info` (see
`kdistill.models.stages`); KerasHub models bring their `pyramid_outputs`:

Example:
    >>> import kdistill
    >>> kdistill.taps.preset("resnet50", "mobilenet_v2")
    {'conv3_block4_out': 'block_6_expand_relu', 'conv4_block6_out': 'block_13_expand_relu'}
"""

from __future__ import annotations

from typing import Mapping, Sequence

import keras

from kdistill.errors import did_you_mean, shorten, shown
from kdistill.models import graph, stages as stage_registry

__all__ = [
    "LOGITS",
    "NESTED",
    "preset",
    "resolve",
    "stage_table",
    "stage_outputs",
    "validate",
    "feature_model",
    "tap_shape",
    "family",
]

#: key under which `feature_model` returns the network's final output.
LOGITS = "logits"

#: separates a nested model's name from a layer inside it in a tap: "teacher_b/conv4_block6_out".
NESTED = "/"

_DEFAULT_PRESET_STAGES = (1, 2)


def stage_table(network: str | keras.Model) -> list[tuple[str, int]] | None:
    """`(layer name, total stride)` shallow to deep of a registered name or a model; None for a model nothing describes.

    A model's table is found, in this order: the one its builder attached to it
    (`kdistill.models.stages.attach`); the one registered under its name (the
    registries name the models they build, and a name survives `.keras` save
    and load); a KerasHub backbone's `pyramid_outputs` (`"backbone/<layer>"`);
    and, as a last resort for models that lost their registered name (an int8
    twin `<name>_int8`, a loaded teacher renamed after its file), the first
    registered table whose layers the model has.

    Raises:
        ValueError: for a name without a registered table, listing the known ones.
    """
    if not isinstance(network, keras.Model):
        return stage_registry.get(network)
    table = stage_registry.attached(network) or stage_registry.by_name(network)
    if table is not None:
        return table
    from kdistill.models import hub  # KerasHub models carry their stages in their backbone ("backbone/<layer>")

    table = hub.stage_table(network)
    if table is not None:
        return table
    found = stage_registry.by_layer_names(network)
    return found[1] if found else None


def family(model: keras.Model) -> str | None:
    """The registered name whose stage table describes `model` (its own name where that is registered), or None.

    Layer names decide only as the last resort of `stage_table`.
    """
    if stage_registry.attached(model) is not None or stage_registry.by_name(model) is not None:
        return model.name
    found = stage_registry.by_layer_names(model)
    return found[0] if found else None


def _ensemble_hint(network: keras.Model) -> str:
    """For an ensemble, the '<member>/<layer>' form its taps take, with each member's stages."""
    from kdistill.models import ensemble

    members = ensemble.members(network)
    if not members:
        return ""
    stages = "; ".join(f"{member.name}: {', '.join(name for name, _ in stage_outputs(member))}" for member in members)
    example = (
        f"{members[0].name}/{stage_outputs(members[0])[-1][0]}"
        if stage_outputs(members[0])
        else f"{members[0].name}/<layer>"
    )
    return (
        f" Several teachers: name each tap '<teacher>/<layer>', e.g. taps={{'{example}': '<student layer>'}} "
        f"(--taps {example}:<student layer>); their stages: {stages}. `kdistill taps suggest --config RUN.yaml` lists both sides."
    )


def stage_outputs(model: keras.Model) -> list[tuple[str, tuple]]:
    """Stage outputs of a model as `(layer name, output shape)`, shallow to deep.

    A model `stage_table` describes uses its table; any other functional model
    gets the last layer at each spatial resolution (padding layers skipped).
    """
    from kdistill.models import ensemble  # here: ensemble's module sits beside this one

    if ensemble.members(model):  # an ensemble's taps are '<member>/<layer>'
        return [
            (f"{member.name}/{name}", shape)
            for member in ensemble.members(model)
            for name, shape in stage_outputs(member)
        ]
    table = stage_table(model)
    if table is not None:
        return [(name, tap_shape(model, name)) for name, _ in table]
    # (layer name, shape, whether the group computes anything) per resolution
    groups: list[list] = []
    for layer in model.layers:
        try:
            shape = tuple(layer.output.shape)
        except (AttributeError, ValueError):
            continue
        if len(shape) != 4 or "pad" in layer.name or isinstance(layer, keras.layers.InputLayer):
            continue
        if groups and groups[-1][1][1:3] == shape[1:3]:
            groups[-1][0], groups[-1][1] = layer.name, shape
            groups[-1][2] = groups[-1][2] or bool(layer.weights)
        else:
            groups.append([layer.name, shape, bool(layer.weights)])
    # Groups without weights (input rescaling, pooled excitation vectors) are not stages.
    return [(name, shape) for name, shape, computes in groups if computes]


def _format_shape(shape: Sequence) -> str:
    return "x".join(str(d) for d in shape[1:])


def validate(model: keras.Model, layer_names: Sequence[str], role: str = "teacher") -> None:
    """Checks that every name is a layer of `model`.

    Raises:
        ValueError: naming the closest matches and listing the stage outputs.

    Example:
        >>> import keras, kdistill
        >>> teacher = kdistill.teachers.resnet50(num_classes=10, input_shape=(32, 32, 3))
        >>> validate(teacher, ["conv4_block7_out"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: Unknown teacher layer 'conv4_block7_out'. Did you mean 'conv4_block6_out'...
    """
    if not isinstance(model, keras.Model) or not hasattr(model, "inputs") or model.inputs is None:
        raise TypeError(
            f"The {role} must be a functional Keras model (keras.Model(inputs, outputs) or a "
            f"keras.applications model), received {type(model).__name__}. Wrap a subclassed "
            "model in a functional one so its layers can be tapped."
        )
    all_names = [layer.name for layer in model.layers]
    for name in layer_names:
        # it dominated the loss without a word
        if name in all_names and isinstance(model.get_layer(name), keras.layers.InputLayer):
            stages = ", ".join(n for n, _ in stage_outputs(model))
            raise ValueError(
                f"{name!r} is the {role}'s input layer: its output is the image itself, not a feature, and its distance "
                f"would dominate the loss. Tap a stage output instead: {stages or 'see ' + role + '.layers'}."
            )
        if name in all_names:
            continue
        if NESTED in name and name.split(NESTED, 1)[0] in all_names:
            member_name, inner = name.split(NESTED, 1)
            member = model.get_layer(member_name)
            if not isinstance(member, keras.Model):
                raise ValueError(
                    f"{name!r} reads layer {inner!r} inside {member_name!r}, but {member_name!r} is a "
                    f"{type(member).__name__}, not a model with layers of its own."
                )
            validate(member, [inner], role=member_name)
            continue
        hint = did_you_mean(name, all_names)
        stages = ", ".join(f"{n} ({_format_shape(s)})" for n, s in stage_outputs(model))
        members = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
        if members and not stages:  # an ensemble: its stages are its members'
            listing = "; ".join(
                ", ".join(f"{m}{NESTED}{n} ({_format_shape(s)})" for n, s in stage_outputs(model.get_layer(m)))
                for m in members
            )
            raise ValueError(
                f"Unknown {role} layer {shown(name)}.{hint} {model.name!r} is made of {len(members)} models ({', '.join(members)}): "
                f"address a layer inside one as '<member>{NESTED}<layer>'. Stage outputs: {shorten(listing, 1000)}."
            )
        raise ValueError(
            f"Unknown {role} layer {shown(name)}.{hint} Stage outputs of {model.name!r}: {stages}. "
            f"All {len(all_names)} layer names: `[l.name for l in {role}.layers]`."
        )


def feature_model(
    model: keras.Model, layer_names: Sequence[str], role: str = "teacher", name: str | None = None
) -> keras.Model:
    """A model sharing `model`'s layers that returns `{layer name: output, "logits": output}`.

    Args:
        model: a functional Keras model with one output (the logits).
        layer_names: layers to tap.
        role: `"teacher"` or `"student"`, used in error messages.
        name: name of the new model.

    Returns:
        A functional `keras.Model` with a dict of outputs.

    Example:
        >>> import numpy as np, kdistill
        >>> student = kdistill.students.get("resnet20", num_classes=10, input_shape=(32, 32, 3))
        >>> features = feature_model(student, ["stage2_out"], role="student")
        >>> {k: tuple(v.shape) for k, v in features(np.zeros((1, 32, 32, 3), "float32")).items()}
        {'stage2_out': (1, 16, 16, 32), 'logits': (1, 10)}
    """
    validate(model, layer_names, role)
    if len(model.outputs) != 1:
        raise ValueError(
            f"The {role} must have exactly one output (the logits), {model.name!r} has "
            f"{len(model.outputs)}. Build a model whose single output is the classifier."
        )
    if LOGITS in layer_names:
        raise ValueError(
            f"{LOGITS!r} names the {role}'s output, which the logits loss (--logits-loss, logits_loss=) already distils; "
            "tap an inner layer (a stage output) instead, or drop the pair."
        )
    inputs = graph.call_inputs(model)
    if any(NESTED in layer_name and layer_name not in _layer_names(model) for layer_name in layer_names):
        outputs = _nested_outputs(model, layer_names, role)
    else:
        outputs = {layer_name: model.get_layer(layer_name).output for layer_name in layer_names}
        outputs[LOGITS] = model.outputs[0]
    return keras.Model(inputs, outputs, name=name or f"{model.name}_{role}_features")


def tap_shape(model: keras.Model, layer_name: str) -> tuple:
    """Output shape (with the batch axis) of a tapped layer, also one inside a nested model (`"member/layer"`)."""
    if layer_name not in _layer_names(model) and NESTED in layer_name:
        member, inner = layer_name.split(NESTED, 1)
        return tap_shape(model.get_layer(member), inner)
    return tuple(model.get_layer(layer_name).output.shape)


def _layer_names(model: keras.Model) -> set[str]:
    return {layer.name for layer in model.layers}


def _nested_outputs(model: keras.Model, layer_names: Sequence[str], role: str) -> dict:
    """Outputs of taps inside nested models (`"member/layer"`), from one rerun of `model`'s graph.

    The graph is rerun on its own inputs with each tapped operation replaced by
    a wrapper that records its output (a nested model is replaced by its own
    feature model), so every layer still runs once and shares its weights.
    """
    direct = [n for n in layer_names if n in _layer_names(model)]
    nested: dict[str, list[str]] = {}
    for layer_name in layer_names:
        if layer_name not in direct:
            member, inner = layer_name.split(NESTED, 1)
            nested.setdefault(member, []).append(inner)
    recorded: dict[str, object] = {}

    def record(operation):
        if operation.name in nested:
            inner_names = nested[operation.name]
            inner_model = feature_model(operation, inner_names, role=role, name=f"{operation.name}_{role}_features")

            def call(*args, **kwargs):
                outputs = inner_model(*args, **kwargs)
                recorded.update({f"{operation.name}{NESTED}{inner}": outputs[inner] for inner in inner_names})
                return outputs[LOGITS]

            return call
        if operation.name in direct:

            def call(*args, **kwargs):
                recorded[operation.name] = operation(*args, **kwargs)
                return recorded[operation.name]

            return call
        return operation

    logits = model._run_through_graph(model.inputs, operation_fn=record)  # the graph walk keras' clone_model uses
    outputs = {layer_name: recorded[layer_name] for layer_name in layer_names}
    outputs[LOGITS] = logits[0] if isinstance(logits, (list, tuple)) else logits
    return outputs


def preset(
    teacher: str | keras.Model, student: str | keras.Model, stages: Sequence[int] | None = _DEFAULT_PRESET_STAGES
) -> dict[str, str]:
    """Teacher -> student taps pairing the networks' stages by depth.

    Stage `i` of the teacher (counted from the shallowest, see `stage_table`) is
    paired with stage `i` of the student; projections align resolutions that
    differ (a CIFAR ResNet keeps 4x larger maps than ResNet50 at 32x32).

    Args:
        teacher: a registered network name (`kdistill.models.stages.names()`),
            a model `stage_table` describes: one built by a registry, or a
            KerasHub model (stages from its backbone's `pyramid_outputs`, as
            `"backbone/<layer>"`).
        student: likewise for the student.
        stages: stage indices to pair. The default `(1, 2)` picks the middle
            stages (ResNet50's conv3 and conv4), which carry the most
            transferable structure; `None` pairs every stage both networks have.

    Returns:
        A dict teacher layer -> student layer, shallow to deep.

    Raises:
        ValueError: for a network without a stage table (naming `taps=` /
            `--taps` and `kdistill taps suggest`) or a stage index out of range.
    """
    teacher_family, teacher_stages = _resolve_family(teacher, "teacher")
    student_family, student_stages = _resolve_family(student, "student")
    count = min(len(teacher_stages), len(student_stages))
    wanted = list(range(count)) if stages is None else list(stages)
    bad = [i for i in wanted if not 0 <= i < count]
    if bad or not wanted:
        raise ValueError(
            f"Stage indices {bad or wanted} are out of range: {teacher_family!r} has "
            f"{len(teacher_stages)} stages and {student_family!r} has {len(student_stages)}, so "
            f"indices 0..{count - 1} can be paired."
        )
    return {teacher_stages[i]: student_stages[i] for i in sorted(wanted)}


def resolve(taps: Mapping[str, str] | str | None, teacher: keras.Model, student: keras.Model) -> dict[str, str]:
    """The taps a distiller reads: the one resolution `FeatureDistiller(taps=...)` and `kdistill distill --taps` share.

    Args:
        taps: `None` or `"preset"`: `preset(teacher, student)`; `"none"` or `{}`:
            no feature taps (logits only); a mapping: those pairs, as given.
        teacher: the teacher model.
        student: the student model.

    Returns:
        A dict teacher layer -> student layer.

    Raises:
        ValueError: when a preset is asked for a pair that has none. A pair
            without a preset fails rather than falling back to logits only:
            the user asked for feature distillation (the default), so training
            without it would report a KD run as a feature run. The message
            names `taps=` / `--taps` and `kdistill taps suggest`.
    """
    if taps is None or taps == "preset":
        return preset(teacher, student)
    if taps == "none":
        return {}
    if isinstance(taps, str):
        raise ValueError(
            f"taps must be None or 'preset', 'none', or a mapping teacher_layer -> student_layer, received {shown(taps)}."
        )
    return {str(teacher_layer): str(student_layer) for teacher_layer, student_layer in dict(taps).items()}


def _resolve_family(network: str | keras.Model, role: str) -> tuple[str, list[str]]:
    """The network's name and its stage layers."""
    if not isinstance(network, keras.Model):
        if network not in stage_registry.names():
            known = stage_registry.names()
            raise ValueError(
                f"Unknown {role} family {shown(network)}.{did_you_mean(str(network), known, count=2)} Known: {', '.join(known)}."
            )
        return network, [name for name, _ in stage_registry.get(network)]
    table = stage_table(network)
    if table is None:
        raise ValueError(
            f"No tap preset knows the {role} {network.name!r}: it is not registered ({', '.join(stage_registry.names())}) and holds no KerasHub "
            "backbone. Pass taps={teacher_layer: student_layer} (CLI: --taps teacher_layer:student_layer); `kdistill taps suggest` "
            "proposes pairs by shape and CKA, and kdistill.taps.stage_outputs lists a model's stages."
            + _ensemble_hint(network)
        )
    return family(network) or network.name, [name for name, _ in table]
