"""Training and validation arrays for the `data` config group, checked and scaled.

`load` takes a loader's raw arrays (see `regfw.build.loaders`), checks them against the declared
`input_shape` and `num_classes`, splits off a stratified, seeded validation set (unless the data set
has its own), keeps at most `data.limit` samples of each split, scales `uint8` images to [0, 1],
adds a missing channel axis, and standardizes tabular features with the training split's statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from omegaconf import DictConfig
from sklearn.model_selection import train_test_split
from sklearn.utils import resample

from regfw.build.loaders import LOADERS, Arrays
from regfw.build.plugins import importable_from_working_directory
from regfw.errors import ConfigError


@dataclass(frozen=True)
class Split:
    """Training and validation arrays.

    Attributes:
        x_train: Training features, float32, shape (n, *input_shape).
        y_train: Training labels: float32 of shape (n, 1) for binary data (as a sigmoid unit
            expects) and for regression targets, int32 of shape (n,) for classes.
        x_val: Validation features.
        y_val: Validation labels.
        num_classes: Number of classes; 0 for regression.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int


def load(cfg: DictConfig, seed: int) -> Split:
    """Loads the data set `cfg.name` and splits off `cfg.validation_split` for validation.

    Args:
        cfg: The `data` config group.
        seed: Seed of the split and of the `limit` subsets.

    Raises:
        ConfigError: If the data cannot be read, is empty or not finite, or does not have the shape
            or classes the config declares; the message names the key to fix.
    """
    arrays = own_arrays(cfg) if "_target_" in cfg else LOADERS.lookup(cfg.name)(cfg)
    train = _checked(arrays.x, arrays.y, cfg)
    if arrays.validation is None:
        train, val = _split(*train, cfg, seed)
    else:
        val = _checked(*arrays.validation, cfg)
    if cfg.get("limit") is not None:
        train, val = (_subset(*part, cfg, seed) for part in (train, val))
    (x_train, y_train), (x_val, y_val) = (_scaled(*part, cfg) for part in (train, val))
    if x_train.ndim == 2:
        mean, std = x_train.mean(axis=0), x_train.std(axis=0)
        std[std == 0] = 1.0
        x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    return Split(x_train, y_train, x_val, y_val, int(cfg.num_classes))


# The keys of a data node that regfw reads itself; a `_target_` gets the others as arguments.
OWN_KEYS = ("_target_", "name", "input_shape", "num_classes", "validation_split", "limit", "loss")


def own_arrays(cfg: DictConfig) -> Arrays:
    """Your data: `_target_` called with the node's other keys (Hydra's `instantiate`).

    It returns `(x, y)`, or `(x, y, x_val, y_val)` when the data has its own validation split.

    Raises:
        ConfigError: If the call fails or returns something else (key `data._target_`).
    """
    from hydra.utils import instantiate

    importable_from_working_directory()
    arguments = {k: v for k, v in cfg.items() if k not in OWN_KEYS or k == "_target_"}
    try:
        parts = instantiate(arguments)
    except Exception as error:  # the user's code: its error, in one line
        cause = error.__cause__ or error
        reason = " ".join(f"{type(cause).__name__}: {cause}".split())
        raise ConfigError("data._target_", cfg._target_, f"could not load: {reason}") from None
    if not isinstance(parts, (tuple, list)) or len(parts) not in (2, 4):
        allowed = "expected it to return (x, y) or (x, y, x_val, y_val) arrays"
        raise ConfigError("data._target_", cfg._target_, allowed)
    return Arrays(parts[0], parts[1], tuple(parts[2:]) or None)


def _source(cfg: DictConfig) -> tuple[str, object]:
    """The config key and value to name when the arrays themselves are wrong."""
    if cfg.get("path") is not None:
        return "data.path", cfg.path
    return ("data._target_", cfg._target_) if "_target_" in cfg else ("data", cfg.name)


def _checked(x: np.ndarray, y: np.ndarray, cfg: DictConfig) -> tuple[np.ndarray, np.ndarray]:
    """Checks one part's arrays; returns them with the labels flattened to shape (n,)."""
    key, value = _source(cfg)
    x, y = np.asarray(x), np.asarray(y)
    if len(x) == 0 or len(x) != len(y) or y.size != len(y):
        problem = f"x has shape {list(x.shape)} and y {list(y.shape)}"
        raise ConfigError(key, value, f"expected samples and one label per sample; {problem}")
    for name, array in (("x", x), ("y", y)):
        if array.dtype.kind not in "biuf":
            raise ConfigError(key, value, f"expected numbers in {name}, got dtype {array.dtype}")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ConfigError(key, value, f"{name} has NaN or infinite values")
    shape, declared = list(x.shape[1:]), list(cfg.input_shape)
    if declared not in (shape, [*shape, 1]):
        allowed = f"the data's samples have shape {shape}; set data.input_shape={shape}"
        raise ConfigError("data.input_shape", declared, allowed)
    y = y.reshape(-1)
    if cfg.num_classes and not np.array_equal(y, np.round(y)):
        allowed = "the labels are not integers (for regression targets set data.num_classes=0)"
        raise ConfigError("data.num_classes", cfg.num_classes, allowed)
    if cfg.num_classes and (y.min() < 0 or y.max() >= cfg.num_classes):
        allowed = f"the labels range over {y.min():g}..{y.max():g}"
        raise ConfigError("data.num_classes", cfg.num_classes, allowed)
    if cfg.num_classes and len(np.unique(y)) < 2:
        allowed = f"every label is {y[0]:g}: a classifier needs at least two classes in the data"
        raise ConfigError(key, value, allowed)
    return x, y


def _split(
    x: np.ndarray, y: np.ndarray, cfg: DictConfig, seed: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Splits off the validation set, stratified by class for classification."""
    try:
        x_train, x_val, y_train, y_val = train_test_split(
            x,
            y,
            test_size=cfg.validation_split,
            random_state=seed,
            stratify=y if cfg.num_classes else None,
        )
    except ValueError as error:
        raise ConfigError("data.validation_split", cfg.validation_split, str(error)) from None
    return (x_train, y_train), (x_val, y_val)


def _subset(
    x: np.ndarray, y: np.ndarray, cfg: DictConfig, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """At most `cfg.limit` samples: a seeded random subset, stratified by class if possible."""
    if len(x) <= cfg.limit:
        return x, y
    stratify = y if cfg.num_classes and cfg.limit >= cfg.num_classes else None
    return tuple(
        resample(x, y, replace=False, n_samples=cfg.limit, random_state=seed, stratify=stratify)
    )


def _scaled(x: np.ndarray, y: np.ndarray, cfg: DictConfig) -> tuple[np.ndarray, np.ndarray]:
    """float32 features (`uint8` images / 255, channel axis added) and labels Keras expects."""
    images = x.dtype == np.uint8
    x = x.astype(np.float32).reshape(len(x), *cfg.input_shape)
    if images:
        x /= 255.0
    if cfg.num_classes in (0, 2):
        return x, y.astype(np.float32).reshape(-1, 1)
    return x, y.astype(np.int32)


def class_weights(setting: object, labels: np.ndarray, num_classes: int) -> dict[int, float] | None:
    """Returns the Keras `class_weight` mapping for `trainer.class_weight`.

    Args:
        setting: None, "balanced" (n_samples / (n_classes * count)), or a mapping class -> weight.
        labels: Training labels.
        num_classes: Number of classes; classes missing from a mapping get weight 1.
    """
    if setting is None:
        return None
    if setting == "balanced":
        counts = np.bincount(labels.ravel().astype(np.int64), minlength=num_classes)
        return {
            c: float(len(labels) / (num_classes * counts[c])) if counts[c] else 1.0
            for c in range(num_classes)
        }
    given = {int(k): float(v) for k, v in dict(setting).items()}
    return {c: given.get(c, 1.0) for c in range(num_classes)}
