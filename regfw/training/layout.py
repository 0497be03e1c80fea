"""The custom-scalars layout of a run: TensorBoard's CUSTOM SCALARS tab, charts grouped by question.

Each chart matches tags by regular expression in every run it shows (a run's `train/` and
`validation/` are runs of their own), so training and validation share a chart:

- "loss decomposition": `epoch_loss` (data loss + penalties), `data_loss` and each `penalty/...`
  on one chart; the penalties alone; the penalty as a fraction of the data loss; the scales;
- "metrics": accuracy (classification) or mean absolute error (regression);
- "weights": the diagnostics of `regfw.training.diagnostics`, one chart per quantity (per-layer
  values and the model-wide one together).

Every run writes the same layout, which TensorBoard merges into one.
"""

from __future__ import annotations

from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalar_metadata
from tensorboard.util import tensor_util

LOSS_DECOMPOSITION = "loss decomposition"
# category -> [(chart title, tag regular expressions)]
CHARTS = {
    LOSS_DECOMPOSITION: [
        ("loss = data_loss + penalty/total (train and validation)",
         [r"^epoch_loss$", r"^data_loss$", r"^penalty/"]),
        ("penalty/<term> and penalty/total: what each term adds to the loss", [r"^penalty/"]),
        ("penalty/total / data_loss (training)", [r"^diagnostics/penalty_to_data_loss$"]),
        ("penalty_scale/<term>: the scale in each epoch", [r"^penalty_scale/"]),
    ],
    "metrics": [
        ("accuracy (classification) or mae (regression)", [r"^epoch_accuracy$", r"^epoch_mae$"]),
    ],
    "weights": [
        ("near_zero: fraction of weights with |w| < 1e-3", [r"^diagnostics/(.+/)?near_zero$"]),
        ("orthogonality: ||G - I||_F / sqrt(p)", [r"^diagnostics/(.+/)?orthogonality$"]),
        ("spectral_norm: largest singular value", [r"^diagnostics/.+/spectral_norm$"]),
        ("frobenius_norm", [r"^diagnostics/.+/frobenius_norm$"]),
    ],
}  # fmt: skip


def layout() -> layout_pb2.Layout:
    """Returns the layout (see the module docstring)."""
    categories = []
    for title, charts in CHARTS.items():
        categories.append(
            layout_pb2.Category(
                title=title,
                chart=[
                    layout_pb2.Chart(
                        title=chart, multiline=layout_pb2.MultilineChartContent(tag=tags)
                    )
                    for chart, tags in charts
                ],
            )
        )
    return layout_pb2.Layout(category=categories)


def layout_summary() -> summary_pb2.Summary:
    """The layout as the summary TensorBoard's custom-scalars plugin reads (no TensorFlow)."""
    summary = summary_pb2.Summary()
    summary.value.add(
        tag=custom_scalar_metadata.CONFIG_SUMMARY_TAG,
        metadata=custom_scalar_metadata.create_summary_metadata(),
        tensor=tensor_util.make_tensor_proto(layout().SerializeToString()),
    )
    return summary
