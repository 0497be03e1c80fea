"""A Hydra callback for tests: records what each job of a multirun returned to the sweeper.

    python train.py -m ... +hydra.callbacks.returns._target_=tests.job_returns.RecordReturns \
        +hydra.callbacks.returns.path=returns.jsonl

(`train.py`'s folder is on `sys.path`, so `tests` imports.) One JSON line per job: its number,
the value it returned (`repr`, so NaN survives) and Hydra's status of the job.
"""

from __future__ import annotations

import json
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class RecordReturns(Callback):
    """Appends each finished job's return value to the file `path`."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        completed = job_return.status == JobStatus.COMPLETED
        line = {
            "job": config.hydra.job.num,
            "value": repr(job_return.return_value) if completed else None,
            "status": job_return.status.name,
        }
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")
