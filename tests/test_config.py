"""Composing every option of every group, the experiments, and the schema's checks (no TensorFlow)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from regfw.config.compose import GROUPS, compose, conf_dir
from regfw.config.options import group_options
from regfw.config.schema import ConfigError, validate

# What an option needs besides the defaults to validate ({tmp} is the test's tmp_path).
NEEDS = {
    "model=cnn": ["data=digits"],
    "model=rnn": ["data=adding"],
    "model=application": ["data=cifar10"],
    "data=file": ["data.path={tmp}/data.csv"],
    "penalty=custom": ["penalty.name=quartic"],
}


def test_groups_have_the_documented_options():
    assert group_options("model") == ["application", "cnn", "mlp", "rnn"]
    assert group_options("penalty") == [
        "clip", "custom", "elastic", "group_lasso", "hoyer", "keras_l1", "keras_l1l2", "keras_l2",
        "keras_orthogonal", "l1", "l2", "max_norm", "none", "orthogonal", "orthogonal_offdiag",
        "spectral", "srip",
    ]  # fmt: skip
    assert group_options("constraint") == ["clip", "max_norm", "non_neg", "unit_norm"]
    assert {"adam", "adamw", "sgd", "rmsprop", "nadam", "adamax", "adagrad", "adadelta", "ftrl",
            "lion", "lamb"} <= set(group_options("optimizer"))  # fmt: skip
    assert group_options("data") == [
        "adding", "breast_cancer", "cifar10", "digits", "fashion_mnist", "file", "mnist",
        "synthetic",
    ]  # fmt: skip
    assert group_options("trainer") == ["default"]
    assert group_options("experiment") == ["seed_clip", "seed_orthogonal", "seed_sparsity"]


@pytest.mark.parametrize(
    "override",
    [
        f"{g}={o}"
        for g in GROUPS
        if g not in ("experiment", "constraint", "callbacks")
        for o in group_options(g)
    ],
)
def test_every_option_composes_and_validates(override, tmp_path):
    (tmp_path / "data.csv").write_text("a,label\n1,0\n")
    cfg = compose([override, *(n.format(tmp=tmp_path) for n in NEEDS.get(override, []))])
    validate(cfg)
    group, option = override.split("=")
    assert cfg[group].get("name", option) == ("quartic" if option == "custom" else option)


def test_configs_are_written_and_read_as_omegaconf_does(tmp_path):
    from omegaconf import OmegaConf

    from regfw.config.effective import effective
    from regfw.config.yaml_text import _DUMPER, _LOADER, load, to_yaml

    assert _DUMPER and _LOADER  # PyYAML's wheels carry libyaml: else these are OmegaConf's
    (tmp_path / "data.csv").write_text("a,label\n1,0\n")
    configs = [
        compose([f"{g}={o}", *(n.format(tmp=tmp_path) for n in NEEDS.get(f"{g}={o}", []))],
                return_hydra_config=True)
        for g in GROUPS if g not in ("experiment", "constraint", "callbacks")
        for o in group_options(g)
    ]  # fmt: skip
    plain = {
        "numbers": ["1e-4", "yes", "", "null", "~", "0x10", "${x}", " lead", "#c", "'q'", '"dq"'],
        "text": {"multi": "two\nlines", "colon": "a: b", "tab": "a\tb", "accent": "é",
                 "long": "words " * 40, "emoji": "\U0001F600"},
        "values": [1, None, True, 1.5e-10, float("inf"), float("nan"), -0.0],
    }  # fmt: skip
    # Configs, and plain containers (written without making a config of them first).
    configs += [OmegaConf.create(plain), plain, effective(compose([])), [{"a": [1, "b"]}, None]]
    configs.append(OmegaConf.create(["penalty.scale=1e-4", "'trainer.run_name=a b'"]))
    for index, cfg in enumerate(configs):
        text = to_yaml(cfg)
        assert text == OmegaConf.to_yaml(cfg)
        # Read back as OmegaConf reads it: the same values, of the same types.
        path = tmp_path / f"{index}.yaml"
        path.write_text(text)
        ours, theirs = load(path), OmegaConf.load(path)
        assert type(ours) is type(theirs)
        assert _typed(OmegaConf.to_container(ours)) == _typed(OmegaConf.to_container(theirs))
    for text in ("a: 1\na: 2\n", "2024-01-01\n", "- !!python/name:os.system\n"):
        (tmp_path / "odd.yaml").write_text(text)
        errors = []
        for read in (load, OmegaConf.load):
            try:
                errors.append(repr(read(tmp_path / "odd.yaml")))
            except Exception as error:  # the same kind of error from both
                errors.append(type(error).__name__)
        assert errors[0] == errors[1], text


def _typed(value: object) -> object:
    """A container with each leaf's type beside it (1 and 1.0 and True differ; NaN equals NaN)."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return (type(value).__name__, "nan" if value != value else value)


def test_default_config_is_the_documented_default_run():
    cfg = compose([])
    validate(cfg)
    assert (cfg.model.name, cfg.data.name, cfg.penalty.name) == (
        "mlp",
        "breast_cancer",
        "orthogonal",
    )
    assert cfg.penalty.scale == pytest.approx(1e-4)
    assert cfg.optimizer.name == "adam"
    assert list(cfg.model.units) == [64] and cfg.model.activation == "relu"


@pytest.mark.parametrize(
    ("experiment", "penalty", "params"),
    [
        ("seed_clip", "clip", {"scale": 0.01, "lower": -1.0, "upper": 1.0, "min_ndim": 0}),
        ("seed_sparsity", "l1", {"scale": 0.001, "alpha": 0.1, "min_ndim": 0}),
        ("seed_orthogonal", "orthogonal", {"scale": 1e-4, "min_ndim": 2}),
    ],
)
def test_experiments_are_the_articles_examples(experiment, penalty, params):
    cfg = compose([f"+experiment={experiment}"])
    validate(cfg)
    assert cfg.penalty.name == penalty
    for key, value in params.items():
        assert cfg.penalty[key] == pytest.approx(value)
    assert list(cfg.penalty.include) == [] and list(cfg.penalty.exclude) == []
    assert (cfg.model.name, list(cfg.model.units), cfg.model.activation) == ("mlp", [64], "relu")
    assert (cfg.data.name, list(cfg.data.input_shape), cfg.data.num_classes) == (
        "synthetic",
        [10],
        2,
    )
    assert cfg.optimizer.name == "adam" and cfg.optimizer.learning_rate == pytest.approx(1e-3)


def test_compose_works_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert compose(["penalty=l1"]).penalty.name == "l1"
    assert (conf_dir() / "config.yaml").is_file()


def test_hydra_output_folders_and_chdir():
    text = (conf_dir() / "config.yaml").read_text()
    assert "dir: outputs/${now:%Y-%m-%d}/${now:%H-%M-%S}" in text
    assert "dir: outputs/multirun/${now:%Y-%m-%d}/${now:%H-%M-%S}" in text
    assert "chdir: false" in text


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["penalty.scale=-1"], "penalty.scale=-1: expected a finite number >= 0"),
        (["penalty.scale=inf"], "penalty.scale=inf: expected a finite number >= 0"),
        (["penalty.scale=nan"], "penalty.scale=nan: expected a finite number >= 0"),
        (["penalty.scale=abc"], "penalty.scale='abc': expected a finite number >= 0"),
        (
            ["penalty=clip", "penalty.lower=1", "penalty.upper=0"],
            "penalty.lower=1: expected lower <= upper",
        ),
        (["trainer.epochs=0"], "trainer.epochs=0: expected an integer >= 1"),
        (["trainer.batch_size=-4"], "trainer.batch_size=-4: expected an integer >= 1"),
        (["trainer.epochs=2.5"], "trainer.epochs=2.5: expected an integer >= 1"),
        (["optimizer.learning_rate=0"], "optimizer.learning_rate=0: expected a finite number > 0"),
        (
            ["data.validation_split=1.5"],
            "data.validation_split=1.5: expected a finite number > 0 and < 1",
        ),
        (["model.units=[]"], "model.units=[]: expected a non-empty list of integers >= 1"),
        (["model.activation=rleu"], "Did you mean 'relu'?"),
        (["trainer.class_weight={0:1,7:2}"], "trainer.class_weight={0: 1, 7: 2}: class 7"),
        (["trainer.class_weight=heavy"], "trainer.class_weight='heavy': expected null, 'balanced'"),
        (["model=cnn"], "data=breast_cancer has input_shape [30]"),
        (["penalty.min_ndim=-1"], "penalty.min_ndim=-1: expected an integer >= 0"),
        (["penalty.include=[3]"], "penalty.include=[3]: expected a list of glob patterns"),
        (
            ["penalty.schedule.name=linear"],
            "penalty.schedule.name='linear': expected one of constant, warmup, step, cosine",
        ),
        (
            ["penalty.schedule.name=warmup", "penalty.schedule.epochs=0"],
            "penalty.schedule.epochs=0: expected an integer >= 1",
        ),
        (
            ["penalty.schedule.name=cosine", "penalty.schedule.final=2"],
            "penalty.schedule.final=2: expected a finite number >= 0 and <= 1",
        ),
        (
            ["penalty=srip", "penalty.iterations=0"],
            "penalty.iterations=0: expected an integer >= 1",
        ),
        (
            ["penalty=max_norm", "penalty.max_value=0"],
            "penalty.max_value=0: expected a finite number > 0",
        ),
        (["penalty=elastic", "penalty.l1=-1"], "penalty.l1=-1: expected a finite number >= 0"),
        (
            ["penalty=keras_orthogonal", "penalty.mode=diag"],
            "penalty.mode='diag': expected one of rows, columns",
        ),
        (["penalty=custom"], "penalty.name='???': expected the name of a registered penalty"),
        (
            ["penalty=l1", "+penalty@penalties.l1=l2"],
            "penalties.l1='l1': the term name is taken by penalty=l1; rename it",
        ),
        (
            ["+penalty@penalties.x=orthogonal", "penalties.x.scale=-2"],
            "penalties.x.scale=-2: expected a finite number >= 0",
        ),
        (
            ["+constraint@constraints.c=clip", "constraints.c.lower=2"],
            "constraints.c.lower=2: expected lower <= upper",
        ),
        (
            ["+constraint@constraints.c=max_norm", "constraints.c.max_value=-1"],
            "constraints.c.max_value=-1: expected a finite number > 0",
        ),
        (["plugins=[1]"], "plugins=[1]: expected a list of module names or .py paths"),
        (["trainer.checkpoint_every=-1"], "trainer.checkpoint_every=-1: expected an integer >= 0"),
        (["trainer.resume=yes"], "trainer.resume='yes': expected true or false"),
    ],
)
def test_bad_values_name_key_value_and_what_is_allowed(overrides, message):
    with pytest.raises(ConfigError) as error:
        validate(compose(overrides))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_valid_class_weights_pass():
    validate(compose(["trainer.class_weight=balanced"]))
    validate(compose(["trainer.class_weight={0:1.0,1:3.0}"]))


def test_every_built_in_penalty_has_its_yaml_file():
    code = "import json, regfw.penalties as p; print(json.dumps(p.available()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    built_in = set(json.loads(out.stdout.splitlines()[-1]))
    assert built_in == set(group_options("penalty")) - {"none", "custom"}
