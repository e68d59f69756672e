"""`PredictionWriter`: `predict` results as a CSV, one row per image, written whole or not at all,
never over an earlier file."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from vit_lightning.errors import ConfigError, UserError
from vit_lightning.run.files import remove_stale_temp_files, temp_path

_FIX = "set --prediction_writer.output_file to a CSV path in a writable folder."


class PredictionWriter(BasePredictionWriter):
    """Writes `predict` results to a CSV: one row per image with file, class and probability.

    The rows go to a hidden temp file beside the CSV, which is renamed into place when predict
    ends: a failed or killed predict leaves no half-written CSV. An existing CSV (an earlier
    predict's) is never replaced: predict stops before the model runs and says so.

    Args:
        output_file: CSV path; defaults to `<default_root_dir>/predictions.csv`. Under DDP each
            rank writes its own `-rank<N>` file.
    """

    def __init__(self, output_file: str | None = None) -> None:
        super().__init__(write_interval="batch")
        if output_file is not None and os.path.isdir(output_file):
            raise ConfigError.of(
                self,
                f"output_file={output_file!r} is a directory: give a file path, e.g. "
                f"--prediction_writer.output_file={os.path.join(output_file, 'predictions.csv')}",
            )
        self.output_file = output_file
        self._writer: Any = None
        self._fh: Any = None
        self._tmp: str | None = None
        self._names: list[str] = []

    def path(self, trainer: L.Trainer, rank: int | None = None) -> str:
        """The CSV of `rank` (default: this process's)."""
        path = self.output_file or os.path.join(trainer.default_root_dir, "predictions.csv")
        if trainer.world_size > 1:
            root, ext = os.path.splitext(path)
            path = f"{root}-rank{trainer.global_rank if rank is None else rank}{ext}"
        return path

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Fails before the checkpoint is loaded and the model runs, not after."""
        if stage != "predict":
            return
        # every rank looks at every rank's file, so that all of them stop, or none
        for rank in range(trainer.world_size):
            if os.path.isfile(self.path(trainer, rank)):
                raise UserError(
                    f"Prediction file {os.path.abspath(self.path(trainer, rank))} exists (an "
                    "earlier predict's) and is kept: set --prediction_writer.output_file to a new "
                    "CSV path, or delete that file to write it again."
                )
        path = os.path.abspath(self.path(trainer))
        parent = os.path.dirname(path)
        while not os.path.exists(parent):  # the folder makedirs would start from
            parent = os.path.dirname(parent)
        if os.path.isdir(path):
            why = "is a directory"
        elif not os.path.isdir(parent):
            why = f"cannot be created: {parent} is a file"
        elif not os.access(parent, os.W_OK):
            why = f"cannot be created: {parent} is not writable"
        else:
            return
        raise UserError(f"Prediction file {path} {why}: {_FIX}")

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = self.path(trainer)
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            remove_stale_temp_files(os.path.dirname(os.path.abspath(path)))  # killed predicts'
            self._tmp = str(temp_path(Path(path)))
            self._fh = open(self._tmp, "w", newline="")  # noqa: SIM115 - spans predict hooks
        except OSError as e:  # e.g. read-only or full: name the file, no traceback
            raise UserError(
                f"Cannot write predictions to {path} ({e.strerror or e}): {_FIX}"
            ) from e
        self._writer = csv.writer(self._fh)
        self._writer.writerow(["file", "class", "class_index", "probability"])
        self._names = trainer.datamodule.predict_names()  # once, not per batch

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: torch.Tensor,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        class_names = trainer.datamodule.class_names
        prob, idx = prediction.float().max(dim=-1)
        for i, p, c in zip(batch_indices, prob.tolist(), idx.tolist(), strict=True):
            self._writer.writerow([self._names[i], class_names[c], c, f"{p:.6f}"])

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = self.path(trainer)
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            os.replace(self._tmp, path)
        except OSError as e:  # e.g. the disk filled up
            raise UserError(
                f"Cannot write predictions to {path} ({e.strerror or e}): {_FIX}"
            ) from e
        finally:
            self._discard()
        print(f"Wrote predictions to {path}")

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._discard()  # no half-written CSV

    def _discard(self) -> None:
        if self._fh is not None:
            self._fh.close()
        if self._tmp is not None:
            Path(self._tmp).unlink(missing_ok=True)
        self._fh = self._tmp = None
