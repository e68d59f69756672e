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
