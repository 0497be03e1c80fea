"""What a run prints: one short line per epoch, the end-of-run summary, train.log, no start-up noise."""

from __future__ import annotations

import logging
import math
import re

import numpy as np
import pytest
import yaml

import regfw
from regfw.config.compose import conf_dir
from regfw.training import console
from tests.conftest import read_metrics, run_train

LIMIT = 160
# What TensorFlow, absl, oneDNN and CUDA print when TensorFlow starts without regfw's quieting.
NOTICES = re.compile(
    r"absl::InitializeLog|cudart_stub|cuda_platform|cuInit|cpu_feature_guard|oneDNN|"
    r"TF_ENABLE_ONEDNN_OPTS|rebuild TensorFlow|^[IWE]0000 ",
    re.M,
)


def console_prefix(message: str = "x") -> str:
    """What the console handler of conf/hydra/job_logging/regfw.yaml puts before an INFO line."""
    spec = yaml.safe_load((conf_dir() / "hydra" / "job_logging" / "regfw.yaml").read_text())
    fmt = spec["formatters"][spec["handlers"]["console"]["formatter"]]
    record = logging.LogRecord("regfw.training.console", logging.INFO, "", 0, message, (), None)
    return logging.Formatter(fmt["format"], fmt.get("datefmt")).format(record)[: -len(message)]


def test_epoch_line_reads_like_the_docstring():
    logs = {"loss": 0.2506, "data_loss": 0.2444, "penalty/total": 0.006293, "accuracy": 0.92308,
            "val_loss": 0.2972, "val_data_loss": 0.29091, "val_accuracy": 0.9123,
            "penalty/orthogonal": 0.006293, "penalty_scale/orthogonal": 1e-4,
            "diagnostics/dense/kernel/near_zero": 0.0057}  # fmt: skip
    assert console.epoch_line(2, 10, logs, 0.123) == (
        "epoch 3/10 0.1s | loss 0.2506 data_loss 0.2444 penalty/total 0.006293 accuracy 0.9231 | "
        "val data_loss 0.2909 accuracy 0.9123"
    )
    regression = {"loss": 1.5, "data_loss": 1.25, "penalty/total": 0.25, "mae": 0.5,
                  "val_data_loss": 2.0, "val_mae": 0.75}  # fmt: skip
    assert console.epoch_line(0, 1, regression, 2.0) == (
        "epoch 1/1 2.0s | loss 1.5 data_loss 1.25 penalty/total 0.25 mae 0.5 | "
        "val data_loss 2 mae 0.75"
    )


def test_numbers_keep_4_significant_digits_in_8_characters():
    usual = [0.0, *np.geomspace(1e-9, 1e9, 97), 0.0009999, 0.001, 9999.4, 9999.6, 1234.5]
    for value in usual:
        text = console.number(value)
        assert len(text) <= 8, (value, text)
        assert float(text) == pytest.approx(value, rel=6e-4, abs=0), (value, text)
    for value in [*np.geomspace(1e-300, 1e300, 41), -1.2345e-5, -1e-12]:  # fewer digits, 8 chars
        text = console.number(value)
        assert len(text) <= 8 and float(text) == pytest.approx(value, rel=0.06), (value, text)
    assert [console.number(v) for v in (None, math.inf, 6.3e-5)] == ["nan", "inf", "6.300e-5"]


def test_epoch_times_stay_short():
    times = [0.04, 2.25, 99.94, 99.96, 100.4, 9999.4, 9999.6, 69 * 86400 - 31]
    assert [console.duration(s) for s in times] == [
        "0.0s", "2.2s", "99.9s", "100s", "100s", "9999s", "167m", "99359m",
    ]  # fmt: skip


@pytest.mark.parametrize("value", [1.2345e-5, -1.2345e-5, 1234.5])
@pytest.mark.parametrize("seconds", [99.96, 9999.4, 69 * 86400 - 31])
def test_epoch_line_fits_the_console_at_its_widest(value, seconds):
    """9,999 epochs, every number at its widest (a custom penalty may be negative), slow epochs."""
    widest = {key: value for key in ("loss", "data_loss", "penalty/total", "accuracy", "val_loss",
                                     "val_data_loss", "val_accuracy")}  # fmt: skip
    line = console_prefix() + console.epoch_line(9998, 9999, widest, seconds)
    assert line.startswith(console_prefix() + "epoch 9999/9999 ")
    assert len(line) <= LIMIT, line


def test_summary_names_the_folder_results_and_tensorboard(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    metrics = {
        "status": "completed", "epochs_run": 10, "wall_time_s": 3.21,
        "output_dir": str(tmp_path / "outputs" / "run"),
        "validation": {"accuracy": 0.95614, "data_loss": 0.12984, "loss": 0.13787},
        "penalty": {"orthogonal": 0.008036, "rest": 0.0001, "total": 0.008136},
    }  # fmt: skip
    assert console.summary_lines(metrics) == [
        "run completed 10 epochs in 3.2s; run folder outputs/run",
        "validation data_loss 0.1298 loss 0.1379 accuracy 0.9561",
        "penalty/total 0.008136 = orthogonal 0.008036 + rest 1.000e-4",
        "tensorboard --logdir outputs/run",
    ]
    diverged = {**metrics, "status": "diverged", "error": "loss became non-finite at epoch 2",
                "output_dir": "/elsewhere/my run"}  # fmt: skip
    lines = console.summary_lines(diverged)
    assert (
        lines[0]
        == "run diverged: loss became non-finite at epoch 2; run folder '/elsewhere/my run'"
    )
    assert lines[-1] == "tensorboard --logdir '/elsewhere/my run'"


def _messages(lines: list[str], pattern: str) -> list[str]:
    return [m.group(1) for line in lines if (m := re.match(pattern, line))]


def test_default_run_prints_short_lines_and_keeps_them_in_train_log(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    result = run_train("trainer.epochs=3", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no TensorFlow start-up notices, nothing else
    lines = result.stdout.splitlines()
    assert lines and max(len(line) for line in lines) <= LIMIT, max(lines, key=len)
    shown = _messages(lines, r"\[\d\d:\d\d:\d\d\]\[INFO\] (.*)$")
    assert len(shown) == len(lines)
    epochs = [m for m in shown if m.startswith("epoch ")]
    assert [m.split(" ")[1] for m in epochs] == ["1/3", "2/3", "3/3"]
    metrics = read_metrics(run_dir)
    last = epochs[-1]
    assert f"val data_loss {console.number(metrics['validation']['data_loss'])} " in last
    assert f"penalty/total {console.number(metrics['penalty']['total'])} " in last
    assert "diagnostics" not in last and "penalty_scale" not in last
    assert shown[0] == "run folder run"
    assert shown[-4:] == console.summary_lines(metrics) != []
    assert shown[-1] == "tensorboard --logdir run"
    logged = (run_dir / "train.log").read_text().splitlines()
    assert _messages(logged, r"\[[\d\- :,]+\]\[[\w.]+\]\[INFO\] - (.*)$") == shown


def _logged_epoch_lines(caplog, cfg, output_dir) -> list[str]:
    with caplog.at_level(logging.INFO, logger="regfw.training.console"):
        regfw.train(cfg, output_dir=output_dir)
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]


@pytest.mark.parametrize(
    "overrides",
    [["model=cnn", "data=digits"], ["model=rnn", "data=adding", "data.n_samples=256"]],
    ids=["cnn-digits", "rnn-adding"],
)
def test_cnn_and_rnn_epoch_lines_fit_the_console(overrides, tmp_path, caplog, fresh_keras):
    cfg = regfw.compose([*overrides, "trainer.epochs=1", "trainer.histograms=false"])
    (line,) = _logged_epoch_lines(caplog, cfg, tmp_path / "run")
    assert len(console_prefix() + line) <= LIMIT, line
    assert line.startswith("epoch 1/1 ") and " | val data_loss " in line
    assert (" accuracy " if cfg.data.num_classes else " mae ") in line


def test_verbose_0_leaves_out_the_epoch_lines(tmp_path, caplog, fresh_keras):
    cfg = regfw.compose(["data=synthetic", "data.n_samples=100", "trainer.epochs=1",
                         "trainer.histograms=false", "trainer.verbose=0"])  # fmt: skip
    assert _logged_epoch_lines(caplog, cfg, tmp_path / "run") == []
    assert any(r.getMessage().startswith("run completed 1 epochs") for r in caplog.records)


def test_notices_pattern_matches_what_tensorflow_prints():
    """The pattern the noise tests rely on recognises TensorFlow's start-up lines."""
    seen = (
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1795652374.485157 4553 cudart_stub.cc:31] Could not find cuda drivers\n"
        "E0000 00:00:1795652380.846625 4553 cuda_platform.cc:52] failed call to cuInit\n"
    )
    assert len(NOTICES.findall(seen)) >= 3
