"""The sweep report, HParams domains and weight diagnostics, against independent numbers."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
from html.parser import HTMLParser

import numpy as np
import pytest
from omegaconf import OmegaConf

import regfw
from regfw.sweeps import report
from regfw.training import diagnostics, hparams
from tests import references


def _fake_job(sweep_dir, job, overrides, metrics=None):
    """A job folder as Hydra and regfw leave it (metrics None: the job died before writing)."""
    hydra_dir = sweep_dir / str(job) / ".hydra"
    hydra_dir.mkdir(parents=True)
    (hydra_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))
    (hydra_dir / "config.yaml").write_text(OmegaConf.to_yaml(regfw.compose(overrides)))
    if metrics is not None:
        (sweep_dir / str(job) / "metrics.json").write_text(json.dumps(metrics))


def _metrics(data_loss, accuracy, status="completed", **extra):
    finite = math.isfinite(data_loss)
    return {
        "status": status,
        "objective": {"name": "val_data_loss", "value": data_loss if finite else None},
        "epochs_run": 2,
        "wall_time_s": 1.5,
        "train": {"loss": 1.0, "data_loss": 0.9, "accuracy": 0.5},
        "validation": {"loss": data_loss + 0.1, "data_loss": data_loss, "accuracy": accuracy},
        "penalty": {"l1": 0.1, "total": 0.1},
        "diagnostics": {"near_zero": 0.25, "orthogonality": 0.5, "dense/kernel/near_zero": 0.3},
        **extra,
    }


@pytest.fixture
def fake_sweep(tmp_path):
    sweep_dir = tmp_path / "sweep"
    seeds = [(0.5, 0.8), (0.7, 0.6), (0.3, 0.9)]
    for job, (loss, accuracy) in enumerate(seeds):
        _fake_job(
            sweep_dir, job, ["penalty=l1", "penalty.scale=0.001", f"trainer.seed={job}"],
            _metrics(loss, accuracy),
        )  # fmt: skip
    _fake_job(
        sweep_dir, 3, ["penalty=l1", "penalty.scale=0.1", "trainer.seed=0"],
        _metrics(math.nan, 0.5, status="diverged", error="training loss became inf in epoch 1"),
    )  # fmt: skip
    _fake_job(sweep_dir, 4, ["penalty=l1", "penalty.scale=0.1", "trainer.seed=1"], None)
    _fake_job(sweep_dir, 10, ["penalty=none", "trainer.seed=0"], _metrics(0.6, 0.7))
    return sweep_dir, seeds


def test_collect_reads_every_job_with_its_status(fake_sweep):
    sweep_dir, _ = fake_sweep
    rows = report.collect(sweep_dir)
    assert [r["job"] for r in rows] == ["0", "1", "2", "3", "4", "10"]
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "diverged", "failed", "ok"]
    assert rows[3]["error"] == "training loss became inf in epoch 1"
    assert "did not finish" in rows[4]["error"]
    assert rows[0]["penalty.name"] == "l1" and rows[0]["penalty.scale"] == 0.001
    assert rows[5]["penalty.name"] == "none" and rows[5]["penalty.scale"] == 0.0
    assert rows[0]["validation/data_loss"] == 0.5 and rows[0]["penalty/l1"] == 0.1
    assert rows[0]["diagnostics/near_zero"] == 0.25
    assert "diagnostics/dense/kernel/near_zero" not in rows[0]  # per-layer values stay in TB


def test_seed_aggregates_are_mean_and_sample_std(fake_sweep):
    sweep_dir, seeds = fake_sweep
    groups = report.aggregate_over_seeds(report.collect(sweep_dir))
    by_scale = {(g["penalty.name"], g["penalty.scale"]): g for g in groups}
    assert set(by_scale) == {("l1", 0.001), ("none", 0.0)}  # failed and diverged rows left out
    group = by_scale[("l1", 0.001)]
    losses = np.array([loss for loss, _ in seeds])
    accuracies = np.array([acc for _, acc in seeds])
    assert group["n"] == 3
    assert group["validation/data_loss/mean"] == pytest.approx(losses.mean())
    assert group["validation/data_loss/std"] == pytest.approx(losses.std(ddof=1))
    assert group["validation/accuracy/std"] == pytest.approx(accuracies.std(ddof=1))
    assert by_scale[("none", 0.0)]["validation/data_loss/std"] == 0.0


def test_write_report_files_and_table(fake_sweep):
    sweep_dir, _ = fake_sweep
    out = io.StringIO()
    report.write_report(sweep_dir, out=out)
    with open(sweep_dir / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and rows[3]["status"] == "diverged"
    with open(sweep_dir / "summary_by_seed.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 2
    text = out.getvalue()
    assert "| diverged: training loss became inf in epoch 1 |" in text
    assert "| job | penalty.name | penalty.scale | trainer.seed |" in text
    for name in ("validation_vs_scale.png", "diagnostics_vs_scale.png"):
        assert (sweep_dir / name).read_bytes().startswith(b"\x89PNG")


def test_hparams_domains_from_sweep_and_search_space():
    columns = hparams.domains(
        ["penalty=l1,clip", "penalty.scale=1e-4,1e-3", "trainer.seed=range(3)", "trainer.epochs=2",
         "hydra.sweep.dir=x"],
        {"optimizer.learning_rate": "tag(log, interval(1e-4, 1e-1))"},
    )  # fmt: skip
    assert list(columns) == [
        "penalty.name", "penalty.scale", "trainer.seed", "optimizer.learning_rate", "status",
    ]  # fmt: skip
    assert columns["penalty.name"].domain.values == ["clip", "l1"]  # TensorBoard sorts them
    assert columns["penalty.scale"].domain.values == [1e-4, 1e-3]
    assert columns["trainer.seed"].domain.values == [0, 1, 2]
    assert (columns["optimizer.learning_rate"].domain.min_value,
            columns["optimizer.learning_rate"].domain.max_value) == (1e-4, 1e-1)  # fmt: skip
    assert columns["status"].domain.values == sorted(hparams.STATUSES)
    unswept = hparams.domains(["trainer.seed=0,1"])
    assert list(unswept) == ["trainer.seed", "penalty.name", "penalty.scale", "status"]
    assert unswept["penalty.name"].domain is None


def test_every_penalty_option_names_its_penalty_after_itself():
    """Why a `penalty=...` override is the `penalty.name` column: the option is the name."""
    from regfw.config.compose import conf_dir
    from regfw.config.options import group_options

    for option in group_options("penalty"):
        spec = OmegaConf.load(conf_dir() / "penalty" / f"{option}.yaml")
        if option == "custom":  # the registered name is given with penalty.name=...
            assert OmegaConf.is_missing(spec, "name")
        else:
            assert spec.name == option


def test_hparams_metrics_are_the_summary_columns_as_tensorboard_tags():
    keys = ["job", "train/loss", "train/accuracy", "train/data_loss", "validation/loss",
            "validation/accuracy", "validation/data_loss", "penalty/l1", "penalty/total",
            "diagnostics/near_zero", "wall_time_s"]  # fmt: skip
    assert hparams.metrics(keys) == [
        ("data_loss", "validation", "validation data_loss"),
        ("epoch_accuracy", "validation", "validation accuracy"),
        ("penalty/total", "train", "penalty/total"),
        ("epoch_loss", "validation", "validation loss"),
        ("data_loss", "train", "train data_loss"),
        ("epoch_loss", "train", "train loss"),
        ("epoch_accuracy", "train", "train accuracy"),
        ("penalty/l1", "train", "penalty/l1"),
        ("diagnostics/near_zero", "train", "diagnostics/near_zero"),
    ]


def test_run_hparams_are_flat_values():
    overrides = ["penalty=l1", "model.units=[8,4]", "trainer.class_weight=balanced"]
    values = hparams.run_values(regfw.compose(overrides), overrides, {"penalty": "l1"})
    assert values == {
        "penalty.name": "l1",
        "model.units": "[8, 4]",
        "trainer.class_weight": "balanced",
        "penalty.scale": 0.001,
    }


def test_run_hparams_from_a_records_plain_data_are_omegaconfs(tmp_path):
    from regfw.config import yaml_text

    # Interpolations (a value, and one inside a list and a mapping), a missing value, a key that
    # is absent, one under a list, one under a scalar, nested mappings and lists.
    data = {
        "trainer": {"seed": 3, "lr": 0.5, "epochs": 4, "tags": ["a", "${trainer.seed}"]},
        "penalty": {
            "name": "l1",
            "scale": "${trainer.lr}",
            "schedule": {"name": "warmup", "epochs": "${trainer.epochs}"},
            "alpha": "???",
        },
        "model": {"units": [8, 4], "layers": [{"units": 3}], "dropout": 0.0},
    }
    overrides = ["trainer.seed=3", "trainer.tags=[a,b]", "penalty.schedule.name=warmup",
                 "penalty.alpha=???", "model.units=[8,4]", "model.layers.0.units=3",
                 "model.missing=1", "model.dropout.x=1", "+extra.key=2"]  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml_text.to_yaml(data))
    plain = yaml_text.read(tmp_path / "config.yaml")
    ours = hparams.run_values(plain, overrides, {"penalty": "l1"})
    assert ours == hparams.run_values(OmegaConf.create(plain), overrides, {"penalty": "l1"})
    assert ours["penalty.scale"] == 0.5 and ours["trainer.tags"] == '["a", 3]'
    assert ours["penalty.schedule.name"] == "warmup" and ours["model.units"] == "[8, 4]"
    assert ours["model.layers.0.units"] == 3
    assert ours["model.missing"] == ours["extra.key"] == "null"  # as a missing key always was


def test_weight_diagnostics_match_numpy():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(8, 5)))
    assert diagnostics.weight_diagnostics(q)["orthogonality"] == pytest.approx(0, abs=1e-6)
    assert diagnostics.weight_diagnostics(q)["spectral_norm"] == pytest.approx(1, rel=1e-6)
    for shape in [(6, 4), (4, 6), (3, 3, 2, 5)]:
        w = rng.normal(size=shape).astype(np.float32)
        w.flat[:5] = 1e-4
        stats = diagnostics.weight_diagnostics(w)
        m = w.reshape(-1, shape[-1]).astype(np.float64)
        p = min(m.shape)
        gram = m.T @ m if m.shape[1] <= m.shape[0] else m @ m.T
        assert stats["near_zero"] == pytest.approx(np.mean(np.abs(w) < 1e-3))
        assert stats["orthogonality"] == pytest.approx(
            np.linalg.norm(gram - np.eye(p)) / np.sqrt(p), rel=1e-5
        )
        assert stats["spectral_norm"] == pytest.approx(np.linalg.svd(m)[1][0], rel=1e-5)
        assert stats["frobenius_norm"] == pytest.approx(np.linalg.norm(m), rel=1e-5)


def test_a_stacks_diagnostics_are_each_jobs_own():
    # The stacked launcher computes every job's diagnostics at once; each job's numbers must be
    # exactly those of the job's weights alone, a diverged (non-finite) job's included.
    rng = np.random.default_rng(2)
    weights = {"a/kernel": rng.normal(size=(5, 6, 3)), "a/bias": rng.normal(size=(5, 3)),
               "b/kernel": rng.normal(size=(5, 2, 7)).astype(np.float32),
               "c/kernel": rng.normal(size=(5, 3, 3, 2, 4))}  # fmt: skip
    weights["b/kernel"][1, 0, 0] = np.nan
    weights["a/kernel"][3] = 0.0
    weights["c/kernel"][4, 0, 0, 0, :2] = 1e-4
    stacked = diagnostics.stacked_model_diagnostics(weights)
    assert len(stacked) == 5
    for job, values in enumerate(stacked):
        alone = diagnostics.model_diagnostics({p: w[job] for p, w in weights.items()})
        assert list(values) == list(alone) and len(alone) == 14
        np.testing.assert_array_equal(list(values.values()), list(alone.values()))
    assert math.isnan(stacked[1]["diagnostics/b/kernel/spectral_norm"])
    assert not math.isnan(stacked[0]["diagnostics/b/kernel/spectral_norm"])
    assert stacked[3]["diagnostics/a/kernel/orthogonality"] == pytest.approx(1.0)


def test_model_diagnostics_weights_and_loss_ratio():
    rng = np.random.default_rng(1)
    weights = {"a/kernel": np.zeros((4, 2)), "a/bias": np.zeros(2), "b/kernel": np.ones((2, 2)),
               "c/kernel": rng.normal(size=(3, 3, 2, 4))}  # fmt: skip
    values = diagnostics.model_diagnostics(weights, {"penalty/total": 0.5, "data_loss": 2.0})
    kernels = {path: references.weight_diagnostics(w) for path, w in weights.items() if w.ndim > 1}
    for path, expected in kernels.items():
        for name, value in expected.items():
            assert values[f"diagnostics/{path}/{name}"] == pytest.approx(value, rel=1e-6)
    assert not any(key.startswith("diagnostics/a/bias") for key in values)
    # near_zero over all the kernels' entries (8 zeros of 4 * 2 + 2 * 2 + 72 entries)...
    assert values["diagnostics/near_zero"] == pytest.approx(8 / 84)
    # ...orthogonality the mean over the kernels (1, sqrt(5) and c's: not their max).
    deviations = [d["orthogonality"] for d in kernels.values()]
    assert kernels["a/kernel"]["orthogonality"] == pytest.approx(1.0)
    assert values["diagnostics/orthogonality"] == pytest.approx(np.mean(deviations), rel=1e-6)
    assert max(deviations) > 1.5 * np.mean(deviations)  # a max (or a sum) would not pass
    assert values["diagnostics/penalty_to_data_loss"] == pytest.approx(0.25)


def test_plots_draw_seed_means_with_error_bars_and_a_dashed_line_for_no_penalty(
    fake_sweep, monkeypatch
):
    from matplotlib.container import ErrorbarContainer
    from matplotlib.figure import Figure

    sweep_dir, seeds = fake_sweep
    figures = []
    savefig = Figure.savefig

    def keep(figure, *args, **kwargs):  # the figures as drawn, before they become PNG files
        figures.append(figure)
        return savefig(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    report.write_report(sweep_dir, out=io.StringIO())
    validation, weights = figures
    losses, accuracies = (np.array(column) for column in zip(*seeds, strict=True))
    panels = [
        (validation.axes[0], losses, 0.6),  # job 10, penalty=none: data loss 0.6
        (validation.axes[1], accuracies, 0.7),
        (weights.axes[0], np.full(3, 0.25), 0.25),  # near_zero
        (weights.axes[1], np.full(3, 0.5), 0.5),  # orthogonality
    ]
    for axes, values, none_value in panels:
        assert axes.get_xscale() == "log"
        # l1 at scale 1e-3: the mean over the three seeds, error bar +- their sample std.
        (bars,) = [c for c in axes.containers if isinstance(c, ErrorbarContainer)]
        line, _, (segments,) = bars.lines
        assert bars.get_label() == "l1"
        mean, std = values.mean(), values.std(ddof=1)
        np.testing.assert_allclose(line.get_xydata(), [[1e-3, mean]])
        np.testing.assert_allclose(
            segments.get_segments(), [[[1e-3, mean - std], [1e-3, mean + std]]]
        )
        # penalty=none (scale 0): a dashed horizontal line at its value.
        (dashed,) = [x for x in axes.get_lines() if x.get_linestyle() == "--"]
        np.testing.assert_allclose(dashed.get_ydata(), [none_value, none_value])
        assert dashed.get_label() == "none (scale 0)"


def test_a_diverging_run_is_marked_diverged(tmp_path, fresh_keras):
    cfg = regfw.compose(
        ["data=synthetic", "data.n_samples=200", "trainer.epochs=3", "trainer.verbose=0",
         "trainer.histograms=false", "penalty=l2", "penalty.scale=1000.0", "optimizer=sgd",
         "optimizer.learning_rate=10.0"]
    )  # fmt: skip
    metrics = regfw.train(cfg, output_dir=tmp_path)
    assert metrics["status"] == "diverged"
    assert metrics["error"].startswith("loss became non-finite at epoch 1")
    assert "penalty term 'l2' on dense/kernel, output/kernel" in metrics["error"]
    assert metrics["epochs_run"] == 1


class _Page(HTMLParser):
    """The tables (rows of cells, with each row's class) and images of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[tuple[str, list[str]]]] = {}
        self.images: list[str] = []
        self._table = self._row = self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id", ""), [])
        elif tag == "tr" and self._table is not None:
            self._row = (attrs.get("class") or "", [])
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row[1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def read_page(path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    return page


def test_report_html_ranks_jobs_and_marks_the_bad_ones(fake_sweep):
    sweep_dir, seeds = fake_sweep
    report.write_report(sweep_dir, out=io.StringIO())
    page = read_page(sweep_dir / "report.html")
    (header, *rows) = page.tables["jobs"]
    columns = header[1]
    assert columns[:2] == ["rank", "job"] and "validation/data_loss (min first)" in columns
    assert columns[-1] == "command"
    jobs = [cells[columns.index("job")] for _, cells in rows]
    losses = {str(job): loss for job, (loss, _) in enumerate(seeds)} | {"10": 0.6}
    assert jobs == [*sorted(losses, key=losses.get), "3", "4"]  # best first, then no objective
    marks = {cells[1]: (css, cells[columns.index("status")]) for css, cells in rows}
    assert marks["3"] == ("diverged", "diverged: training loss became inf in epoch 1")
    assert marks["4"][0] == "failed" and "did not finish" in marks["4"][1]
    assert {marks[j][0] for j in ("0", "1", "2", "10")} == {"ok"}
    commands = {cells[1]: cells[-1] for _, cells in rows}
    assert commands["0"] == "python train.py penalty=l1 penalty.scale=0.001 trainer.seed=0"
    (seed_header, *groups) = page.tables["seeds"]
    assert seed_header[1][:3] == ["penalty.name", "penalty.scale", "n"]
    l1 = next(cells for _, cells in groups if cells[:2] == ["l1", "0.001"])
    losses_l1 = np.array([loss for loss, _ in seeds])
    assert l1[2] == "3"
    assert l1[3] == f"{losses_l1.mean():.4g} ± {losses_l1.std(ddof=1):.2g}"
    assert len(page.images) == 2
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG")
    assert "http" not in (sweep_dir / "report.html").read_text()  # nothing from the network


def test_plots_do_not_magnify_tiny_differences():
    from regfw.sweeps import plots

    low, high = plots.y_limits([0.7, 0.7001], [0.0, 0.0])
    assert high - low >= plots.MIN_SPAN * 0.7001  # the 1e-4 difference is < 0.3% of the axis
    assert 1e-4 / (high - low) < 0.003
    low, high = plots.y_limits([0.5, 0.9], [0.05, 0.0])  # real differences keep their range
    assert (low, high) == pytest.approx((0.45 - 0.05 * 0.45, 0.9 + 0.05 * 0.45))  # 5% headroom
    assert plots.spread_label([0.7, 0.7001]) == "spread 0.0001 (0.014% of the mean)"
