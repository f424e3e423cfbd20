"""int8 weights as TFLite stores them: symmetric, narrow range ([-127, 127]), zero point 0, per output channel.

The quantized layers (`kdistill.quantize.layers`) fake-quantize their kernels onto this grid while they train, and
`kdistill.quantize.biases` puts the biases on the int32 grid that follows from it (scale: input scale x weight scale).
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["fake_quant_weights", "weight_range"]


def fake_quant_weights(kernel, axis: int | None = None):
    """Symmetric int8 fake quantization of a kernel (per channel along `axis`, or per tensor).

    The range is the kernel's largest magnitude (per channel), narrow ([-127, 127]),
    zero point 0: TFLite's own weight format, so the converter keeps the values.

    Example:
        >>> import numpy as np
        >>> q = fake_quant_weights(np.array([[0.5, -1.0], [0.26, 0.1]], "float32"), axis=1)
        >>> bool(np.allclose(keras.ops.convert_to_numpy(q)[:, 1], [-1.0, 0.1], atol=1.0 / 127))
        True
    """
    largest = weight_range(kernel, axis)
    return keras.quantizers.fake_quant_with_min_max_vars(
        kernel, -largest, largest, num_bits=8, narrow_range=True, axis=axis
    )


def weight_range(kernel, axis: int | None = None):
    """The symmetric int8 range of a kernel: its largest magnitude per channel along `axis` (or overall); the scale is this / 127."""
    kernel = ops.convert_to_tensor(kernel)
    reduce = [a for a in range(len(kernel.shape)) if a != axis] if axis is not None else None
    return ops.maximum(ops.stop_gradient(ops.max(ops.abs(kernel), axis=reduce)), 1e-8)
