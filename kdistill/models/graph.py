"""Reading and rebuilding a functional model's graph.

`model_graph` lists a model's own nodes and which nodes read each tensor,
`only_reader` finds a tensor's single reader (the BatchNormalization folding and
the quantization rewrite walk graphs with them), and `call_inputs` gives the
inputs to rebuild a model with: one tensor, not a list of one, so that the
rebuilt model takes a plain batch without Keras' "structure of `inputs`"
warning.

Example:
    >>> import keras
    >>> inputs = keras.Input((4,))
    >>> model = keras.Model([inputs], keras.layers.Dense(2)(inputs))
    >>> call_inputs(model) is model.inputs[0]
    True
    >>> nodes, readers = model_graph(model)
    >>> [type(node.operation).__name__ for node in nodes]
    ['InputLayer', 'Dense']
"""

from __future__ import annotations

import collections

import keras

__all__ = ["call_inputs", "model_graph", "only_reader"]


def call_inputs(model: keras.Model):
    """`model`'s input tensor when it has one (not a list of one), else the list of its inputs."""
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs


def model_graph(model: keras.Model) -> tuple[list, dict[int, list]]:
    """A functional model's own nodes (inputs first) and `{id(tensor): the nodes reading it}`.

    Only this model's graph: another model sharing its layers adds nodes to
    those layers, which are not counted here.
    """
    by_depth = model._nodes_by_depth
    nodes = [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]
    readers = collections.defaultdict(list)
    for node in nodes:
        for tensor in node.input_tensors:
            readers[id(tensor)].append(node)
    return nodes, readers


def only_reader(tensor, readers: dict[int, list], outputs: set[int]):
    """The one node reading `tensor`, or None when several (or none) read it or it is a model output (`id` in `outputs`)."""
    reading = readers[id(tensor)]
    return reading[0] if len(reading) == 1 and id(tensor) not in outputs else None
