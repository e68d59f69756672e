"""`PredictionWriter`: `predict` results as a CSV, one row per image."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from vit_lightning.errors import UserError

_FIX = "set --prediction_writer.output_file to a CSV path in a writable folder."


class PredictionWriter(BasePredictionWriter):
    """Writes `predict` results to a CSV: one row per image with file, class and probability.

    Args:
        output_file: CSV path; defaults to `<default_root_dir>/predictions.csv`. Under DDP each
            rank writes its own `-rank<N>` file.
    """

    def __init__(self, output_file: str | None = None) -> None:
        super().__init__(write_interval="batch")
        if output_file is not None and os.path.isdir(output_file):  # a config error: exit 2
            raise ValueError(
                f"output_file={output_file!r} is a directory: give a file path, e.g. "
                f"--prediction_writer.output_file={os.path.join(output_file, 'predictions.csv')}"
            )
        self.output_file = output_file
        self._writer: Any = None
        self._fh: Any = None
        self._names: list[str] = []

    def path(self, trainer: L.Trainer) -> str:
        path = self.output_file or os.path.join(trainer.default_root_dir, "predictions.csv")
        if trainer.world_size > 1:
            root, ext = os.path.splitext(path)
            path = f"{root}-rank{trainer.global_rank}{ext}"
        return path

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Fails before the checkpoint is loaded and the model runs, not after."""
        if stage != "predict":
            return
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
            self._fh = open(path, "w", newline="")  # noqa: SIM115 - spans predict hooks
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
        self._fh.close()
        print(f"Wrote predictions to {self.path(trainer)}")
