"""`ValPictures`: what the model does, as pictures, at the end of validation.

Logs a grid of predictions on fixed validation images, the confusion matrix, and attention maps
([CLS] per head, plus rollout) to W&B (`log_image`), TensorBoard (`add_figure`) and CSV loggers
(PNG files next to metrics.csv). The figures themselves are drawn by `vit_lightning.analysis.viz`.
"""

from __future__ import annotations

import io
import os
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger

from vit_lightning.analysis import viz
from vit_lightning.errors import ConfigError
from vit_lightning.run.files import write_file


class ValPictures(Callback):
    """Pictures of the model at the end of validation, every `every_n_epochs` epochs.

    Cheap: one forward pass over `num_images` fixed validation images (the first ones of the val
    set, so epochs compare), plus the confusion matrix the module accumulates anyway.

    Args:
        enabled: Set false to log no pictures.
        every_n_epochs: Log every N validation epochs.
        num_images: Images in the prediction grid.
        num_attention: Images in the attention figure (needs `net.attention_maps` and [CLS]).
    """

    def __init__(
        self,
        enabled: bool = True,
        every_n_epochs: int = 1,
        num_images: int = 16,
        num_attention: int = 4,
    ) -> None:
        if every_n_epochs < 1 or num_images < 1 or num_attention < 0:
            raise ConfigError.of(
                self,
                f"every_n_epochs={every_n_epochs} and num_images={num_images} must be >= 1, "
                f"num_attention={num_attention} >= 0",
            )
        self.enabled, self.every_n_epochs = enabled, every_n_epochs
        self.num_images, self.num_attention = num_images, num_attention
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def _fixed_batch(self, trainer: L.Trainer) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self._batch is None:
            ds = getattr(trainer.datamodule, "val_set", None)
            if ds is None or len(ds) == 0:
                return None
            items = [ds[i] for i in range(min(self.num_images, len(ds)))]
            self._batch = (
                torch.stack([x for x, _ in items]),
                torch.tensor([int(y) for _, y in items]),
            )
        return self._batch

    def figures(
        self, trainer: L.Trainer, pl_module: L.LightningModule, confmat: torch.Tensor | None
    ) -> dict[str, Any]:
        """name -> matplotlib Figure (rank 0 only calls this)."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        dm = trainer.datamodule
        figs: dict[str, Any] = {}
        if confmat is not None:
            figs["confusion_matrix"] = viz.confusion_figure(confmat, dm.class_names)
        batch = self._fixed_batch(trainer)
        if batch is None:
            return figs
        x, y = batch
        net = pl_module.net
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                x = x.to(pl_module.device)
                probs = pl_module(x).float().softmax(dim=-1).cpu()
                images = viz.to_display(x, dm.mean, dm.std)
                figs["predictions"] = viz.prediction_grid(images, probs, y, dm.class_names)
                k = min(self.num_attention, len(x))
                if (
                    k
                    and hasattr(net, "attention_maps")
                    and getattr(net, "cls_token", None) is not None
                ):
                    heads = viz.cls_attention(net, x[:k]).cpu()
                    rollout = viz.attention_rollout(net, x[:k]).cpu()
                    figs["attention"] = viz.attention_figure(images[:k], heads, rollout)
        finally:
            pl_module.train(was_training)
        return figs

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        # every rank computes (the metric syncs across ranks); only rank 0 draws
        metric = getattr(pl_module, "val_confmat", None)
        confmat = metric.compute().cpu() if metric is not None else None
        if not trainer.is_global_zero:
            return
        import matplotlib.pyplot as plt

        for name, fig in self.figures(trainer, pl_module, confmat).items():
            log_figure(trainer, f"val/{name}", fig)
            plt.close(fig)


def log_figure(trainer: L.Trainer, key: str, fig: Any) -> None:
    """Send a figure to every logger that can take one."""
    step, epoch = trainer.global_step, trainer.current_epoch
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[fig], step=step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(key, fig, global_step=step, close=False)
        elif isinstance(logger, CSVLogger):
            png = io.BytesIO()  # rendered first, then written whole: a kill leaves no half PNG
            fig.savefig(png, format="png")
            name = f"{key.replace('/', '_')}-epoch{epoch:03d}.png"
            write_file(os.path.join(logger.log_dir, "pictures", name), png.getvalue())
