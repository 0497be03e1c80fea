"""The README's examples work as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, read_metrics

README = (REPO / "README.md").read_text()


def _python_block(heading: str) -> str:
    section = README.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_own_penalty_example_trains(tmp_path, monkeypatch, fresh_keras):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(_python_block("Your own penalty"), namespace)
    metrics = namespace["metrics"]
    assert set(metrics["penalty"]) == {"quartic", "total"}
    assert read_metrics(tmp_path / "outputs" / "quartic") == metrics
    w = np.array([[1.0, -2.0], [0.5, 0.0]], dtype="float32")
    assert float(namespace["penalty"](w)) == pytest.approx(1e-3 * (1 + 16 + 0.0625))


def test_quick_start_commands_are_what_ci_runs():
    quick = README.split("## Quick start\n", 1)[1].split("\n## ", 1)[0]
    assert 'pip install -e ".[dev]" && python train.py' in quick
    assert "python -m pytest -q" in quick
    ci = (REPO / ".ci" / "run").read_text()
    assert 'pip install --quiet --disable-pip-version-check -e ".[dev]"' in ci
    assert "python -m pytest -q" in ci


def _train_commands() -> list[tuple[dict[str, str], list[str]]]:
    """Every `python train.py ...` in the README's bash blocks: (environment, arguments).

    Blocks indented in lists count; `VAR=value` words before the command are its environment;
    the command an `sbatch --wrap "..."` runs counts too; a here-document's lines are a file's.
    """
    import shlex

    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        end = None
        for line in block.replace("\\\n", " ").splitlines():
            if end is not None:
                end = None if line.strip() == end else end
                continue
            if heredoc := re.search(r"<<-?\s*'?(\w+)'?", line):
                end = heredoc.group(1)
            words = shlex.split(line, comments=True)
            if "--wrap" in words:
                words = shlex.split(words[words.index("--wrap") + 1])
            env = {}
            while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
                key, value = words.pop(0).split("=", 1)
                env[key] = value
            if words[:2] == ["python", "train.py"]:
                commands.append((env, words[2:]))
    return commands


TRAIN_COMMANDS = _train_commands()
# The worked example's command (`hydra.searchpath=...`) needs the files its block writes first:
# tests/test_open_config.py::test_readme_worked_example_runs runs that block whole.
CHECKED_ALONE = [c for c in TRAIN_COMMANDS
                 if not any(a.startswith("hydra.searchpath=") for a in c[1])]  # fmt: skip


def _command_id(command: tuple[dict[str, str], list[str]]) -> str:
    env, args = command
    worker = f"TF_CONFIG worker {json.loads(env['TF_CONFIG'])['task']['index']} " if env else ""
    return worker + " ".join(args)


def _problem(args: list[str], cwd: Path) -> str | None:
    """`regfw.cli.find_problem(args)`; in a process of its own when the command picks a backend.

    Choosing a backend must happen before Keras is imported, and this process imported it.
    """
    from regfw.cli import find_problem

    if not any(arg.startswith("trainer.backend=") for arg in args):
        return find_problem(args)
    code = "import sys; from regfw.cli import find_problem; print(find_problem(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    answer = done.stdout.strip().splitlines()[-1]
    return None if answer == "None" else answer


@pytest.mark.parametrize(("env", "args"), CHECKED_ALONE, ids=map(_command_id, CHECKED_ALONE))
def test_every_readme_train_command_is_valid(env, args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for arg in args:  # the user's own data files: any file of that name passes the check
        if arg.startswith("data.path="):
            (tmp_path / arg.split("=", 1)[1]).write_text("x\n")
    assert _problem(args, tmp_path) is None
    assert set(env) <= {"TF_CONFIG"}
    if env:  # a worker of the README's cluster: TensorFlow's TF_CONFIG format
        tf_config = json.loads(env["TF_CONFIG"])
        assert set(tf_config) == {"cluster", "task"} and set(tf_config["cluster"]) == {"worker"}
        assert tf_config["task"]["type"] == "worker"
        assert "trainer.strategy=multi_worker" in args


def test_the_readme_cluster_has_one_command_per_worker():
    configs = [json.loads(env["TF_CONFIG"]) for env, _ in TRAIN_COMMANDS if env]
    workers = configs[0]["cluster"]["worker"]
    assert len(workers) == 2 and all(c["cluster"]["worker"] == workers for c in configs)
    assert sorted(c["task"]["index"] for c in configs) == list(range(len(workers)))


def test_readme_explain_example_is_what_explain_prints(fresh_keras):
    import regfw
    from regfw.explain import explain

    section = README.split("### Choosing weights\n", 1)[1].split("\n### ", 1)[0]
    command, shown = re.search(r"```bash\n(python -m regfw.explain .*?)\n```\n\n```\n(.*?)```",
                               section, re.S).groups()  # fmt: skip
    assert explain(regfw.compose(command.split()[3:])) == shown.rstrip("\n")


def test_readme_documents_every_penalty_and_option():
    from regfw.config.options import group_options

    for group in ("model", "data", "optimizer", "constraint", "penalty"):
        for option in group_options(group):
            assert f"`{option}`" in README, (group, option)


def _sweep_commands() -> list[list[str]]:
    """The `python train.py -m ...` commands of the README's Sweeps section, as argument lists."""
    import shlex

    section = README.split("## Sweeps\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    lines = " ".join(blocks).replace("\\\n", " ").splitlines()
    commands = [shlex.split(line, comments=True) for line in lines]
    return [c[2:] for c in commands if c[:3] == ["python", "train.py", "-m"]]


def test_sweep_commands_in_the_readme_are_valid():
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from regfw.config import compose as config

    commands = _sweep_commands()
    assert len(commands) == 11 and any("hydra/launcher=submitit_slurm" in c for c in commands)
    assert any("hydra/launcher=stacked" in c for c in commands)
    for args in commands:
        assert _problem(args, REPO) is None, args
        first = []  # Hydra's compose takes one value per key: the first of each sweep
        for override in OverridesParser.create().parse_overrides(args[1:]):
            values = (
                list(override.sweep_string_iterator())
                if override.is_sweep_override()
                else [override.get_value_element_as_str()]
            )
            first.append(f"{override.get_key_element()}={values[0]}")
        with initialize_config_dir(config_dir=str(config.conf_dir()), version_base="1.3"):
            cfg = compose("config", overrides=first, return_hydra_config=True)
        if "hydra.launcher.partition=gpu" in args:  # a real cluster's, not the local one
            assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.partition == "gpu"
