"""A test callback: the training process sends itself a real signal at a given step."""

import os
import signal

from lightning.pytorch.callbacks import Callback


class SignalAt(Callback):
    """Send `sig` to this process at the start of the batch after `step` optimizer steps."""

    def __init__(self, step: int, sig: str = "SIGKILL") -> None:
        self.step, self.sig, self.sent = step, sig, False

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), getattr(signal, self.sig))


def signal_at(step: int, sig: str) -> list[str]:
    """CLI arguments that add `SignalAt(step, sig)` to the trainer's callbacks."""
    return [
        "--trainer.callbacks+=helpers.signal_at.SignalAt",
        f"--trainer.callbacks.step={step}",
        f"--trainer.callbacks.sig={sig}",
    ]


class SignalInFinalValidation(Callback):
    """Global rank 0 sends `sig` to itself at the final epoch's validation batch `batch`."""

    def __init__(self, batch: int = 1, sig: str = "SIGTERM") -> None:
        self.batch, self.sig, self.sent = batch, sig, False

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, *args) -> None:
        final = trainer.current_epoch == trainer.max_epochs - 1 and not trainer.sanity_checking
        if final and batch_idx == self.batch and trainer.global_rank == 0 and not self.sent:
            self.sent = True
            os.kill(os.getpid(), getattr(signal, self.sig))
