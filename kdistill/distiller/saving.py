"""How a `FeatureDistiller` compiles, and what `save` writes and `keras.saving.load_model` reads back.

`CompileAndSave` is a base of `kdistill.distiller.FeatureDistiller` (as Keras' `Trainer` is of `keras.Model`): `compile`
takes the cross-entropy with labels and wraps the optimizer for mixed precision; `get_config` and `from_config` carry
the models, the taps and the constructor's `OPTIONS`; the compile config carries the optimizer's state.
"""

from __future__ import annotations

import keras

from kdistill.losses.labels import LabelLoss

__all__ = ["CompileAndSave"]


class CompileAndSave:
    """`compile`, and the configs that save and rebuild a distiller (its class lists the saved `OPTIONS`)."""

    def compile(self, optimizer="adam", loss="sparse_categorical_crossentropy", metrics=None, **kwargs):
        """Configures training; `loss` is the cross-entropy with labels on the student's logits.

        Args:
            optimizer: Keras optimizer or name; wrapped in a `LossScaleOptimizer`
                when the student computes in float16 (mixed_float16).
            loss: `"sparse_categorical_crossentropy"` (integer labels),
                `"categorical_crossentropy"` (one-hot), a `keras.losses.Loss`
                with `from_logits=True`, or `fn(labels, logits)`.
            metrics: metrics on the student's logits, e.g. `["accuracy"]`. They
                are compiled as weighted metrics, so they follow `sample_weight`
                and count only labelled images (`UNLABELED` labels weigh 0).
            **kwargs: other `keras.Model.compile` arguments (`jit_compile`, ...).

        Returns:
            The distiller, so `distiller.compile(...).fit(...)` reads naturally.
        """
        self.training_objective.label_loss = LabelLoss(loss)
        if metrics is not None and kwargs.get("weighted_metrics") is None:
            # Keras ignores sample weights in `metrics`; as weighted metrics they count only the labelled images of a
            # batch that mixes in a transfer set (UNLABELED labels get weight 0). Without them the values are the same.
            kwargs["weighted_metrics"], metrics = metrics, None
        optimizer = keras.optimizers.get(optimizer)
        if self.student.dtype_policy.name == "mixed_float16" and not isinstance(
            optimizer, keras.optimizers.LossScaleOptimizer
        ):
            # float16 gradients underflow without loss scaling.
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)
        # `loss` is computed by compute_loss (the objective's label loss), never through Keras' CompileLoss, which would
        # then stay unbuilt: Keras traces the whole model again at the start of every fit/evaluate to build it (timed in
        # benchmarks/README.md).
        self._compile_loss = None
        return self

    def compile_from_config(self, config: dict) -> None:
        """Re-compiles from `get_compile_config()` when a saved distiller is loaded, optimizer state included."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def get_compile_config(self) -> dict | None:
        # Saved before fit: save the state a load builds (or Keras warns "Skipping variable loading for optimizer" when
        # it loads).
        if self.built and self.compiled and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)
        return super().get_compile_config()

    def get_config(self) -> dict:
        serialize = keras.saving.serialize_keras_object
        config = {
            "name": self.name,
            "teacher": serialize(self.teacher),
            "student": serialize(self.student),
            "taps": dict(self.taps),
        }
        return {**config, **{option: serialize(getattr(self, option)) for option in self.OPTIONS}}

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> "CompileAndSave":
        config = dict(config)
        for key in ("teacher", "student"):
            config[key] = keras.saving.deserialize_keras_object(config[key], custom_objects=custom_objects)
        for key in ("feature_loss", "logits_loss"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key], custom_objects=custom_objects)
        return cls(**config)
