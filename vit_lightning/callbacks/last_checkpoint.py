"""`LastCheckpoint`: a `last.ckpt` that is always current."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from vit_lightning import compat
from vit_lightning.errors import ConfigError
from vit_lightning.run.files import is_local, remove_stale_temp_files


class LastCheckpoint(ModelCheckpoint):
    """Writes `last.ckpt` at the end of every epoch, and every N optimizer steps if asked.

    A ModelCheckpoint that monitors a metric refreshes its `save_last` file only when the metric
    improves, so `last.ckpt` goes stale. This one monitors nothing: it always saves, in place.
    Lightning makes step and epoch triggers exclusive; here the step trigger is added to the epoch
    one, and skipped on an epoch's last batch, whose save comes right after validation. A fit
    starts by removing the temp files that killed saves left in `dirpath`.

    Args:
        dirpath: Directory of `last.ckpt`; the CLI sets it to `<default_root_dir>/checkpoints`.
        every_n_train_steps: Also save every N optimizer steps (mid-epoch), 0 to disable.
    """

    def __init__(self, dirpath: str | None = None, every_n_train_steps: int = 0) -> None:
        if every_n_train_steps < 0:
            raise ConfigError.of(self, f"every_n_train_steps={every_n_train_steps} must be >= 0")
        super().__init__(
            dirpath=dirpath,
            filename=self.CHECKPOINT_NAME_LAST,
            monitor=None,
            save_top_k=1,
            enable_version_counter=False,
        )
        self._every_n_train_steps = every_n_train_steps

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if not compat.is_last_train_batch(trainer):
            super().on_train_batch_end(trainer, *args)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)  # resolves dirpath
        if stage == "fit" and trainer.is_global_zero and self.dirpath and is_local(self.dirpath):
            remove_stale_temp_files(self.dirpath)
