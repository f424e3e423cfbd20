"""Compute the frozen teacher once: store its tapped outputs and logits (or those of many views per image), then train from them.

With a deterministic input pipeline (no random augmentation), the teacher's
outputs for an image never change, so running it every epoch is wasted work.
`build` runs it once over the training images and writes NumPy `.npy` files
(read back as memory maps; no pickle) plus `meta.json` with a key made of
hashes of the teacher's weights and architecture, the images and labels, and
the tapped layers. `load` refuses a cache whose key does not match, saying
which part changed.

With views (`build(views=K, augment=...)`) it stores K random views per image,
crops, flips and mixes of two images, with what rebuilds each, and training
replays them: the student sees exactly the image the teacher saw. `top_k`
stores only the teacher's k largest logits per view (`top_k` module).

One module per job: `build` (running the teacher and writing the files),
`load` (opening and checking), `cache` (the open cache and its batches),
`replay` (views rebuilt batch by batch), `top_k` (compact logits).

It needs no TensorFlow: the files are NumPy memory maps, and `dataset`
returns tf.data on the TensorFlow backend and `ViewBatches` (a
`keras.utils.PyDataset` reading the memory maps batch by batch) elsewhere.

Example:
    >>> import numpy as np, tempfile, keras
    >>> from kdistill.data.batches import ArrayBatches
    >>> from kdistill.run import teacher_cache
    >>> inputs = keras.Input((8, 8, 3)); hidden = keras.layers.Conv2D(4, 3, name="hidden")(inputs)
    >>> teacher = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(hidden)))
    >>> data = ArrayBatches(np.ones((6, 8, 8, 3), "float32"), np.arange(6) % 2, batch_size=4)
    >>> cache = teacher_cache.build(teacher, ["hidden"], data, tempfile.mkdtemp(), verbose=0)
    >>> len(cache), sorted(cache.outputs)
    (6, ['hidden', 'logits'])
"""

from kdistill.run.teacher_cache.build import build, check_augmentation, check_writable, teacher_fingerprint
from kdistill.run.teacher_cache.cache import IN_MEMORY_VIEWS_LIMIT, StaleCacheError, TeacherCache
from kdistill.run.teacher_cache.load import load, rebuild_hint
from kdistill.run.teacher_cache.replay import ViewBatches

__all__ = [
    "TeacherCache",
    "ViewBatches",
    "StaleCacheError",
    "build",
    "load",
    "check_augmentation",
    "check_writable",
    "rebuild_hint",
    "teacher_fingerprint",
    "IN_MEMORY_VIEWS_LIMIT",
]
