"""TEMPORARY shim: the old module path, until tests and benchmarks import the new ones."""

import torch  # noqa: F401  (tests patch faults.torch.save)

from vit_lightning.callbacks.nonfinite_guard import NonFiniteGuard, NonFiniteLossError  # noqa: F401
from vit_lightning.callbacks.preemption import Preemption  # noqa: F401
from vit_lightning.checkpoints import AtomicCheckpointIO, corrupt_checkpoint  # noqa: F401
from vit_lightning.errors import UserError  # noqa: F401
