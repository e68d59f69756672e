"""A test callback for the chaos soak (tests/test_soak.py): it reports where the run is, and at one
seeded moment sends a real signal to its own process, in a training step, in validation or inside
a checkpoint write.

Every event is one line appended to `events`: `<time> <rank> <pid> <event> <details>`. The soak
reads them to tell where an outside signal fell, which rank has which PID, and where a run
resumed. `fire` lines name the signal and the phase the process was in when it was sent.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

TRAIN, VALIDATION, SAVE = "train", "validation", "save"  # the phases a signal can fall in


def _tensor_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


class _Tripwire:
    """A file that calls `fire` once `at` bytes have been written through it."""

    def __init__(self, f: Any, at: int, fire: Any) -> None:
        self._f, self._at, self._fire, self.written = f, at, fire, 0

    def write(self, data: Any) -> int:
        n = self._f.write(data)
        self.written += len(data)
        if self.written >= self._at:
            self._fire()
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


class Chaos(Callback):
    """Logs the run's phases to `events`; on global rank `rank`, sends `sig` to this process:

    - `phase="train"`: `delay` seconds after the start of the batch at global step `at`;
    - `phase="validation"`: `delay` seconds after the start of validation batch `batch` of the
      first (non-sanity) validation in epoch `at` or later;
    - `phase="save"`: in the `at`-th checkpoint write of this process, once `fraction` of the
      checkpoint's tensor bytes are written (or after the write, before the file is swapped in);
    - `phase="none"`: never (the events alone, for a signal sent from outside).
    """

    def __init__(
        self,
        events: str,
        phase: str = "none",
        at: int = 0,
        batch: int = 0,
        delay: float = 0.0,
        fraction: float = 0.5,
        sig: str = "SIGKILL",
        rank: int = 0,
    ) -> None:
        self.events, self.plan, self.at, self.batch = events, phase, at, batch
        self.delay, self.fraction, self.sig, self.rank = delay, fraction, sig, rank
        self.phase, self.detail, self.saves, self.fired = "startup", "", 0, False
        self._global_rank = 0

    def _log(self, event: str, details: str = "") -> None:
        line = f"{time.time():.3f} {self._global_rank} {os.getpid()} {event} {details}\n"
        with open(self.events, "a") as f:  # one short append per line: ranks do not interleave
            f.write(line)

    def _enter(self, phase: str, detail: str = "") -> None:
        self.phase, self.detail = phase, detail
        self._log("phase", f"{phase} {detail}".strip())

    def _armed(self) -> bool:
        return not self.fired and self._global_rank == self.rank

    def _fire(self) -> None:
        if self.fired:
            return
        self.fired = True
        self._log("fire", f"{self.sig} {self.phase} {self.detail}")
        os.kill(os.getpid(), getattr(signal, self.sig))

    def _fire_after(self, delay: float) -> None:
        if delay <= 0:
            self._fire()
        else:
            timer = threading.Timer(delay, self._fire)  # wherever the main thread is by then
            timer.daemon = True  # a run that ends first ends without it
            timer.start()

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._global_rank = trainer.global_rank
        original = torch.save

        def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
            self.saves += 1
            before = self.phase, self.detail
            self._enter(SAVE, os.path.basename(str(getattr(f, "name", f))))
            armed = self.plan == SAVE and self.saves == self.at and self._armed()
            try:
                if armed:
                    f = _Tripwire(f, max(1, int(self.fraction * _tensor_bytes(obj))), self._fire)
                original(obj, f, *args, **kwargs)
                if armed:
                    self._fire()  # past the tensors: still before the file is swapped in
            finally:
                self._enter(*before)

        torch.save = save  # only this test process's

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._log("start", f"step={trainer.global_step} epoch={trainer.current_epoch}")
        self._enter(TRAIN, f"step={trainer.global_step}")

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, idx: int) -> None:
        self._enter(TRAIN, f"step={trainer.global_step}")
        if self.plan == TRAIN and trainer.global_step == self.at and self._armed():
            self._fire_after(self.delay)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self._enter(VALIDATION, f"epoch={trainer.current_epoch}")

    def on_validation_batch_start(self, trainer: Any, pl_module: Any, batch: Any, idx: int, *a):
        if trainer.sanity_checking:
            return
        self._enter(VALIDATION, f"epoch={trainer.current_epoch} batch={idx}")
        planned = self.plan == VALIDATION and trainer.current_epoch >= self.at
        if planned and idx == self.batch and self._armed():
            self._fire_after(self.delay)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            # the epoch's checkpoints are written next (ModelCheckpoint hooks run last)
            self._enter(TRAIN, f"after validation epoch={trainer.current_epoch}")

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._log("end", f"step={trainer.global_step}")
        self._enter("end")
