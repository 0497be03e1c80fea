"""Reading a sweep's results as a person would: console, TensorBoard's tabs and report.html.

One small sweep (2 penalties x 2 scales, tiny data) is shared by the module. The event files are
read back with TensorBoard's own parsers; the browser tests start TensorBoard on loopback and look
at it, and at report.html, in the system's headless Chromium.
"""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.browser import chromium, chromium_missing, open_custom_scalars, open_hparams_table
from tests.browser import tensorboard as tensorboard_server
from tests.conftest import read_metrics, run_train
from tests.test_console import LIMIT, NOTICES
from tests.test_report import read_page
from tests.test_sweeps import hparam_value, hparams_plugin_data

# Its module-scoped runs are made once: the whole module on one xdist worker.
pytestmark = pytest.mark.xdist_group("test_reading_results")

SWEEP = [
    "data=synthetic", "data.n_samples=200", "trainer.epochs=2", "trainer.histograms=false",
    "penalty=l1,orthogonal", "penalty.scale=1e-4,1e-3",
]  # fmt: skip
TRIALS = [
    "0 penalty=l1 penalty.scale=0.0001",
    "1 penalty=l1 penalty.scale=0.001",
    "2 penalty=orthogonal penalty.scale=0.0001",
    "3 penalty=orthogonal penalty.scale=0.001",
]
browser = pytest.mark.skipif(bool(chromium_missing()), reason=chromium_missing() or "")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """The finished sweep (every job completed) and what the command printed."""
    sweep_dir = tmp_path_factory.mktemp("reading") / "sweep"
    result = run_train("-m", *SWEEP, f"hydra.sweep.dir={sweep_dir}", cwd=sweep_dir.parent)
    assert result.returncode == 0, result.stderr
    return result, sweep_dir


@pytest.fixture(scope="module")
def served(sweep):
    """TensorBoard serving the sweep folder, for the browser tests: its URL."""
    with tensorboard_server(sweep[1]) as url:
        yield url


def _accumulator(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    acc.Reload()
    return acc


def test_sweep_output_is_short_quiet_and_ends_with_where_to_look(sweep):
    result, sweep_dir = sweep
    assert not NOTICES.search(result.stderr + result.stdout), result.stderr
    assert result.stderr == ""
    ours = [line for line in result.stdout.splitlines() if re.match(r"\[\d\d:\d\d:\d\d\]", line)]
    assert len([line for line in ours if "] epoch " in line]) == 4 * 2
    assert max(len(line) for line in ours) <= LIMIT
    tail = result.stdout.strip().splitlines()[-2:]
    assert tail == [
        "Report: sweep/report.html",
        "TensorBoard: tensorboard --logdir sweep  "
        "# one sweep per TensorBoard: HParams reads a single sweep's columns",
    ]
    assert (sweep_dir / "report.html").is_file()


def test_each_job_keeps_its_lines_in_train_log(sweep):
    result, sweep_dir = sweep
    shown = [line.split("] ", 1)[1] for line in result.stdout.splitlines()
             if re.match(r"\[\d\d:\d\d:\d\d\]\[INFO\] ", line)]  # fmt: skip
    for job in range(4):
        logged = (sweep_dir / str(job) / "train.log").read_text().splitlines()
        messages = [line.split("] - ", 1)[1] for line in logged]
        start = shown.index(f"run folder sweep/{job}")
        assert messages == shown[start : start + len(messages)]
        assert len([m for m in messages if m.startswith("epoch ")]) == 2
        assert messages[-1] == f"tensorboard --logdir sweep/{job}"


def test_custom_scalars_layout_puts_the_loss_decomposition_first(sweep):
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.util import tensor_util

    _, sweep_dir = sweep
    run_dir = sweep_dir / "0"  # penalty=l1
    (event,) = _accumulator(run_dir).Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(tensor_util.make_ndarray(event.tensor_proto).item())
    titles = [c.title for c in layout.category]
    assert titles[0] == "loss decomposition" and "weights" in titles
    chart = layout.category[0].chart[0]
    tags = {split: set(_accumulator(run_dir / split).Tags()["tensors"])
            for split in ("train", "validation")}  # fmt: skip
    matched = {(split, tag) for split, found in tags.items() for tag in found
               if any(re.search(p, tag) for p in chart.multiline.tag)}  # fmt: skip
    assert matched == {
        ("train", "epoch_loss"), ("train", "data_loss"), ("train", "penalty/l1"),
        ("train", "penalty/total"), ("validation", "epoch_loss"), ("validation", "data_loss"),
    }  # fmt: skip
    weights = next(c for c in layout.category if c.title == "weights")
    near_zero = [t for t in tags["train"] if re.search(weights.chart[0].multiline.tag[0], t)]
    assert sorted(near_zero) == [
        "diagnostics/dense/kernel/near_zero", "diagnostics/near_zero",
        "diagnostics/output/kernel/near_zero",
    ]  # fmt: skip
    assert not [t for t in tags["validation"] if t.startswith("evaluation_")]  # Keras's copies


def test_hparams_trials_are_named_by_job_and_swept_values(sweep):
    _, sweep_dir = sweep
    experiment = hparams_plugin_data(sweep_dir)["experiment"]
    assert [h.name for h in experiment.hparam_infos] == ["penalty.name", "penalty.scale", "status"]
    metrics = {(m.name.group, m.name.tag) for m in experiment.metric_infos}
    for group in ("train", "validation"):
        assert {(group, "data_loss"), (group, "epoch_loss"), (group, "epoch_accuracy")} <= metrics
    assert {("train", f"penalty/{t}") for t in ("total", "l1", "orthogonal")} <= metrics
    assert {("train", f"diagnostics/{d}")
            for d in ("near_zero", "orthogonality", "penalty_to_data_loss")} <= metrics  # fmt: skip
    assert not any(tag.count("/") > 1 for _, tag in metrics)  # no per-layer values
    from tensorboard.plugins.hparams import api_pb2, metadata

    for job, trial in enumerate(TRIALS):
        run_dir = sweep_dir / str(job)
        session = hparams_plugin_data(run_dir)["session"]
        assert session.group_name == trial
        values = {k: hparam_value(v) for k, v in session.hparams.items()}
        assert values["status"] == read_metrics(run_dir)["status"] == "completed"
        assert f"penalty={values['penalty.name']}" in trial
        content = _accumulator(run_dir).PluginTagToContent(metadata.PLUGIN_NAME)
        ended = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
        assert ended.status == api_pb2.STATUS_SUCCESS


def test_config_text_is_the_effective_config_with_its_command(sweep):
    _, sweep_dir = sweep
    (event,) = _accumulator(sweep_dir / "0" / "train").Tensors("config")
    from tensorboard.util import tensor_util

    text = tensor_util.make_ndarray(event.tensor_proto).item().decode()
    lines = [line.removeprefix("    ") for line in text.splitlines()]
    assert lines[0] == (
        "# python train.py data=synthetic data.n_samples=200 trainer.epochs=2 "
        "trainer.histograms=False penalty=l1 penalty.scale=0.0001"
    )
    shown = yaml.safe_load("\n".join(lines[1:]))
    assert shown["penalty"]["schedule"] == {"name": "constant"}  # no inert schedule keys
    assert shown["penalty"]["scale"] == 0.0001 and "penalties" not in shown
    recorded = yaml.safe_load((sweep_dir / "0" / ".hydra" / "config.yaml").read_text())
    assert recorded["penalty"]["schedule"]["every"] == 5  # the record keeps the whole config


def test_report_html_lists_the_jobs_best_first_with_plots(sweep):
    _, sweep_dir = sweep
    page = read_page(sweep_dir / "report.html")
    header, *rows = page.tables["jobs"]
    columns = header[1]
    job = columns.index("job")
    assert sorted(r[1][job] for r in rows) == ["0", "1", "2", "3"]
    objective = {str(j): read_metrics(sweep_dir / str(j))["objective"]["value"] for j in range(4)}
    assert [r[1][job] for r in rows] == sorted(objective, key=objective.get)
    for css, cells in rows:
        overrides = yaml.safe_load(
            (sweep_dir / cells[job] / ".hydra" / "overrides.yaml").read_text()
        )
        assert css == "ok"
        assert cells[-1] == "python train.py " + " ".join(overrides)
    assert len(page.images) == 2
    for src in page.images:
        assert base64.b64decode(src.removeprefix("data:image/png;base64,")).startswith(b"\x89PNG")


@pytest.mark.slow
@pytest.mark.browser
@browser
def test_tensorboard_hparams_table_shows_the_trials_in_chromium(served):
    with chromium() as page:
        open_hparams_table(page, served)
        cells = page.locator("vaadin-grid-cell-content")
        for trial in TRIALS:
            cells.filter(has_text=trial).first.wait_for(timeout=30_000)
        texts = [t.strip() for t in cells.all_inner_texts()]
        for column in ("Trial ID", "penalty.name", "penalty.scale", "status",
                       "validation data_loss", "penalty/total"):  # fmt: skip
            assert column in texts, texts
        assert "penalty" not in texts  # the duplicate group column is gone
        assert texts.count("completed") == 4


@pytest.mark.slow
@pytest.mark.browser
@browser
def test_tensorboard_custom_scalars_show_the_loss_decomposition_in_chromium(served):
    with chromium() as page:
        open_custom_scalars(page, served)
        assert page.get_by_text("loss decomposition").first.is_visible()
        chart = page.locator("tf-custom-scalar-multi-line-chart-card").first
        assert (
            "loss = data_loss + penalty/total" in chart.locator(".heading-label").first.inner_text()
        )
        # 4 jobs x (train: loss, data_loss, penalty/<term>, penalty/total; validation: 2)
        chart.get_by_text("Matches (24)").wait_for(timeout=30_000)
        lines = chart.locator("vz-line-chart2 path.line")  # Playwright reads through shadow DOM
        for _ in range(300):
            if lines.count() >= 24:
                break
            page.wait_for_timeout(100)
        assert lines.count() >= 24  # every series is drawn


@pytest.mark.slow
@pytest.mark.browser
@browser
def test_report_html_renders_its_table_and_images_in_chromium(sweep):
    _, sweep_dir = sweep
    with chromium() as page:
        page.goto((sweep_dir / "report.html").as_uri())
        rows = page.locator("#jobs tbody tr")
        assert rows.count() == 4
        assert rows.first.locator("td").nth(1).inner_text() in {"0", "1", "2", "3"}
        images = page.locator("img")
        assert images.count() == 2
        widths = images.evaluate_all("imgs => imgs.map(i => i.complete && i.naturalWidth)")
        assert all(w and w > 400 for w in widths), widths
        page.locator("#jobs th", has_text="job").first.click()  # sort by job number
        assert rows.locator("td:nth-child(2)").all_inner_texts() == ["0", "1", "2", "3"]
