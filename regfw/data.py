"""Data sets as numpy arrays: the article's synthetic problem and scikit-learn's on-disk sets.

Each loader returns features and integer labels; `load` splits them (stratified, seeded) and
standardizes tabular features with the training split's statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from omegaconf import DictConfig
from sklearn import datasets
from sklearn.model_selection import train_test_split

from regfw.registry import Registry

LOADERS: Registry[Callable[[DictConfig], tuple[np.ndarray, np.ndarray]]] = Registry("data set")


@dataclass(frozen=True)
class Split:
    """Training and validation arrays.

    Attributes:
        x_train: Training features, float32, shape (n, *input_shape).
        y_train: Training labels: float32 of shape (n, 1) for binary data (as a sigmoid unit
            expects), int32 of shape (n,) for classes.
        x_val: Validation features.
        y_val: Validation labels.
        num_classes: Number of classes.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int


@LOADERS.register("synthetic")
def _synthetic(cfg: DictConfig) -> tuple[np.ndarray, np.ndarray]:
    (n_features,) = cfg.input_shape
    return datasets.make_classification(
        n_samples=cfg.n_samples,
        n_features=n_features,
        n_informative=max(2, n_features // 2),
        n_classes=cfg.num_classes,
        random_state=cfg.seed,
    )


@LOADERS.register("breast_cancer")
def _breast_cancer(cfg: DictConfig) -> tuple[np.ndarray, np.ndarray]:
    return datasets.load_breast_cancer(return_X_y=True)


@LOADERS.register("digits")
def _digits(cfg: DictConfig) -> tuple[np.ndarray, np.ndarray]:
    x, y = datasets.load_digits(return_X_y=True)
    return x.reshape(-1, 8, 8, 1) / 16.0, y


def load(cfg: DictConfig, seed: int) -> Split:
    """Loads the data set `cfg.name` and splits off `cfg.validation_split` for validation.

    Args:
        cfg: The `data` config group.
        seed: Seed of the split.

    Raises:
        ValueError: If the arrays do not have the shape or classes the config declares.
    """
    x, y = LOADERS.lookup(cfg.name)(cfg)
    x, y = np.asarray(x, dtype=np.float32), np.asarray(y).astype(np.int32)
    if tuple(x.shape[1:]) != tuple(cfg.input_shape):
        raise ValueError(
            f"data.input_shape={list(cfg.input_shape)}: the data has shape {list(x.shape[1:])}"
        )
    if y.min() < 0 or y.max() >= cfg.num_classes:
        raise ValueError(f"data.num_classes={cfg.num_classes}: labels range {y.min()}..{y.max()}")
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=cfg.validation_split, random_state=seed, stratify=y
    )
    if x.ndim == 2:
        mean, std = x_train.mean(axis=0), x_train.std(axis=0)
        std[std == 0] = 1.0
        x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    if cfg.num_classes == 2:
        y_train, y_val = (y.reshape(-1, 1).astype(np.float32) for y in (y_train, y_val))
    return Split(x_train, y_train, x_val, y_val, int(cfg.num_classes))


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
