"""Where each data set's arrays come from: generators, scikit-learn, keras.datasets, user files.

A loader takes the `data` config group and returns the raw `Arrays` (features and labels, plus the
data set's own validation split when it has one); `regfw.build.data.load` checks, splits and scales
them. Files are read without pickle; a file that cannot be read is a `ConfigError` naming
`data.path`.
"""

from __future__ import annotations

import csv
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from sklearn import datasets

from regfw.errors import ConfigError
from regfw.registry import Registry, did_you_mean


@dataclass(frozen=True)
class Arrays:
    """A data set's raw arrays, samples first.

    Attributes:
        x: Features.
        y: Labels or regression targets, one per sample.
        validation: The data set's own validation `(x, y)` (keras.datasets' test split), or None
            to split one off `x, y` by `data.validation_split`.
    """

    x: np.ndarray
    y: np.ndarray
    validation: tuple[np.ndarray, np.ndarray] | None = None


LOADERS: Registry[Callable[[DictConfig], Arrays]] = Registry("data set")
KERAS_DATASETS = ("mnist", "fashion_mnist", "cifar10")  # read by keras.datasets or from a .npz


@LOADERS.register("synthetic")
def _synthetic(cfg: DictConfig) -> Arrays:
    (n_features,) = cfg.input_shape
    x, y = datasets.make_classification(
        n_samples=cfg.n_samples,
        n_features=n_features,
        n_informative=max(2, n_features // 2),
        n_classes=cfg.num_classes,
        random_state=cfg.seed,
    )
    return Arrays(x, y)


@LOADERS.register("breast_cancer")
def _breast_cancer(cfg: DictConfig) -> Arrays:
    return Arrays(*datasets.load_breast_cancer(return_X_y=True))


@LOADERS.register("digits")
def _digits(cfg: DictConfig) -> Arrays:
    x, y = datasets.load_digits(return_X_y=True)
    return Arrays(x.reshape(-1, 8, 8, 1) / 16.0, y)


def adding_problem(n_samples: int, timesteps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The adding problem (Hochreiter & Schmidhuber, 1997), as in Arjovsky et al. (2016).

    Each sequence has two channels: values drawn uniformly from [0, 1), and a marker that is 1 at
    one random step in the first half, 1 at one random step in the second half, and 0 elsewhere.
    The target is the sum of the two marked values; always predicting 1 gives a mean squared error
    of 1/6, the baseline a recurrent net must beat by remembering.

    Args:
        n_samples: Number of sequences.
        timesteps: Length of each sequence (>= 2).
        seed: Seed of the generator.

    Returns:
        `x` of shape (n_samples, timesteps, 2) and `y` of shape (n_samples,).
    """
    rng = np.random.default_rng(seed)
    values = rng.uniform(size=(n_samples, timesteps))
    rows = np.arange(n_samples)
    half = timesteps // 2
    marked = (rng.integers(0, half, n_samples), rng.integers(half, timesteps, n_samples))
    markers = np.zeros_like(values)
    for steps in marked:
        markers[rows, steps] = 1.0
    return np.stack([values, markers], axis=-1), sum(values[rows, steps] for steps in marked)


@LOADERS.register("adding")
def _adding(cfg: DictConfig) -> Arrays:
    return Arrays(*adding_problem(cfg.n_samples, cfg.timesteps, cfg.seed))


def _keras_dataset(cfg: DictConfig) -> Arrays:
    """keras.datasets' train split, with its test split for validation.

    Downloads through `keras.datasets.<name>.load_data()` when `data.path` is null; otherwise reads
    a local `.npz` in the same format (arrays x_train, y_train, x_test, y_test).
    """
    if cfg.path is None:
        import keras

        try:
            (x, y), validation = getattr(keras.datasets, cfg.name).load_data()
        except Exception as error:  # urllib's errors, or Keras's own wrapping of them
            reason = " ".join(str(error).split()) or type(error).__name__
            raise ConfigError(
                "data.path",
                None,
                f"keras.datasets.{cfg.name}.load_data() could not download the data ({reason}); "
                f"without network, copy {cfg.name}'s .npz (arrays x_train, y_train, x_test, "
                f"y_test) here and set data.path=<file>.npz",
            ) from None
        return Arrays(x, y, validation)
    x, y, x_test, y_test = read_npz(cfg.path, ("x_train", "y_train", "x_test", "y_test"))
    return Arrays(x, y, (x_test, y_test))


for _name in KERAS_DATASETS:
    LOADERS.add(_name, _keras_dataset)


@LOADERS.register("file")
def _file(cfg: DictConfig) -> Arrays:
    if Path(cfg.path).suffix.lower() == ".csv":
        return read_csv(cfg.path, cfg.label_column)
    return Arrays(*read_npz(cfg.path, ("x", "y")))


def read_npz(path: str, keys: tuple[str, ...]) -> list[np.ndarray]:
    """Reads the arrays `keys` from a `.npz` file, without pickle.

    Raises:
        ConfigError: If the file cannot be read or lacks one of the arrays (key `data.path`).
    """
    if Path(path).is_file() and not zipfile.is_zipfile(path):
        raise ConfigError("data.path", path, "is not a .npz file (a .npz is a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            found = list(npz.files)
            arrays = [npz[key] for key in keys if key in found]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ConfigError("data.path", path, f"cannot read it as a .npz file: {error}") from None
    if len(arrays) < len(keys):
        allowed = f"expected arrays {', '.join(keys)}; the file has {', '.join(found) or 'none'}"
        raise ConfigError("data.path", path, allowed)
    return arrays


def read_csv(path: str, label_column: str) -> Arrays:
    """Reads a numeric `.csv` file with a header row; `label_column` holds the labels.

    Raises:
        ConfigError: If the file cannot be read or parsed as numbers (key `data.path`), or has no
            column `label_column` (key `data.label_column`).
    """
    try:
        with open(path, newline="") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": ours below
            header = [name.strip() for name in next(csv.reader(f), [])]
            table = np.loadtxt(f, delimiter=",", ndmin=2, dtype=np.float64)
    except (OSError, ValueError) as error:
        raise ConfigError("data.path", path, f"cannot read it as a numeric .csv: {error}") from None
    if not header:
        raise ConfigError("data.path", path, "the file is empty; expected a header row and rows")
    if table.size == 0:
        allowed = "the file has a header row but no data rows; expected rows of numbers"
        raise ConfigError("data.path", path, allowed)
    if table.shape[1] != len(header):
        allowed = (
            f"expected a header row and rows of {len(header)} numbers; found {len(table)} rows "
            f"of {table.shape[1]}"
        )
        raise ConfigError("data.path", path, allowed)
    if label_column not in header:
        allowed = (
            f"expected a column of {path}.{did_you_mean(label_column, header)} "
            f"Columns: {', '.join(header) or 'none'}"
        )
        raise ConfigError("data.label_column", label_column, allowed)
    column = header.index(label_column)
    return Arrays(np.delete(table, column, axis=1), table[:, column])
