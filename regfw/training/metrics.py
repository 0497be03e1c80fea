"""The data loss and the metrics a run reports, and what of them a saved model keeps.

`data_loss` is the loss without penalties, computed and averaged exactly as Keras computes and
averages `loss`: the compiled loss function on each batch, with the batch's sample weights (class
weights become sample weights), then the mean over batches weighted by their sizes. So on the
same weights `loss - data_loss` is exactly the penalty (to float32 rounding), whatever the class
weights, sample weights, precision or strategy: on validation data that is `penalty/total`; in
training, where the weights change from step to step, it is the penalty averaged over the
epoch's steps.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops
from keras.src.losses.loss import unscale_loss_for_distribution


class DataLoss(keras.metrics.Mean):
    """The compiled loss without penalties, as a metric (put it in `weighted_metrics`).

    Args:
        loss: The loss object the model is compiled with (the same instance).
        name: The metric's name.
    """

    def __init__(self, loss: keras.losses.Loss, name: str = "data_loss", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.loss = loss
        self._direction = "down"  # what Keras callbacks' mode="auto" reads: lower is better

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        # Inside tf.distribute a Keras loss divides itself by the number of replicas (their sum is
        # the global loss); Keras multiplies `loss` back before it reports it, and so do we.
        value = unscale_loss_for_distribution(
            self.loss(y_true, y_pred, sample_weight=sample_weight)
        )
        # Keras weighs each batch's loss by the batch size when it averages `loss` over an epoch.
        super().update_state(value, sample_weight=ops.shape(y_pred)[0])

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "loss": keras.losses.serialize(self.loss)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DataLoss:
        return cls(keras.losses.deserialize(config["loss"]), name=config["name"])


def loss_and_metrics(
    num_classes: int, loss_name: str | None = None
) -> tuple[keras.losses.Loss, list[Any], list[Any]]:
    """The data loss, the metrics and the weighted metrics (`data_loss`) of a run.

    Args:
        num_classes: 2 (binary cross-entropy, accuracy), more (sparse categorical cross-entropy,
            accuracy) or 0 (regression: mean squared error, with `mae` instead of accuracy).
        loss_name: Any other `keras.losses` name (`data.loss`), in place of the default loss.
    """
    if num_classes == 0:
        loss, metric = keras.losses.MeanSquaredError(), keras.metrics.MeanAbsoluteError("mae")
    elif num_classes == 2:
        loss, metric = keras.losses.BinaryCrossentropy(), keras.metrics.BinaryAccuracy("accuracy")
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
        metric = keras.metrics.SparseCategoricalAccuracy("accuracy")
    if loss_name is not None:
        loss = keras.losses.LossFunctionWrapper(keras.losses.get(loss_name), name=loss_name)
    return loss, [metric], [DataLoss(loss)]


def keras_only_compile_config(model: keras.Model, weighted_metrics: list[Any]) -> dict[str, Any]:
    """The model's compile config with `DataLoss` replaced by a Keras metric of the same loss.

    This is what `model.keras` records, so that plain `keras.saving.load_model` (without regfw)
    compiles the model: its `data_loss` is Keras's own mean of the loss, the same number without
    sample weights. `regfw.load_model` compiles with `DataLoss` again.
    """
    config = keras.Model.get_compile_config(model)
    weighted = []
    for metric in weighted_metrics:
        if isinstance(metric, DataLoss):
            function = keras.losses.get(metric.loss.name)  # Keras's function of that loss
            metric = keras.metrics.MeanMetricWrapper(function, name=metric.name)
        weighted.append(keras.saving.serialize_keras_object(metric))
    config["weighted_metrics"] = weighted
    return config
