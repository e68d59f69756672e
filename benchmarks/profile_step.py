"""Profile the template's training steps with the PyTorch profiler (`make profile`).

Runs `fit` on the configs/cifar10.yaml model and training recipe (Mixup/CutMix, label smoothing,
DropPath, the template's callbacks) over in-memory CIFAR-sized data, records steps 4-8, prints the
ops by self time and writes a Chrome trace (open it in chrome://tracing or Perfetto).
"""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

import lightning as L
import torch
import yaml
from torch.profiler import ProfilerActivity, profile, schedule

from benchmarks.common import ROOT, cifar_net_kwargs
from vit_lightning import VisionTransformer
from vit_lightning.callbacks import NonFiniteGuard, RNGState, RunSummary
from vit_lightning.data import SyntheticDataModule
from vit_lightning.module import ViTClassifier


class Profile(L.Callback):
    def __init__(self, prof: profile) -> None:
        self.prof = prof

    def on_train_batch_end(self, *args) -> None:
        self.prof.step()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--out", default=str(ROOT / "runs" / "profile"))
    args = p.parse_args()
    recipe = yaml.safe_load((ROOT / "configs" / "cifar10.yaml").read_text())["model"]
    recipe = {k: v for k, v in recipe.items() if k != "net"}
    torch.manual_seed(0)
    module = ViTClassifier(VisionTransformer(**cifar_net_kwargs()), **recipe)
    dm = SyntheticDataModule(train_size=12 * args.batch, val_size=args.batch, batch_size=args.batch)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    Path(args.out).mkdir(parents=True, exist_ok=True)
    with profile(
        activities=activities,
        schedule=schedule(wait=2, warmup=2, active=4, repeat=1),
        record_shapes=False,
        with_stack=False,
    ) as prof:
        trainer = L.Trainer(
            accelerator=args.device,
            devices=1,
            max_epochs=1,
            logger=False,
            limit_val_batches=0,
            precision="bf16-mixed" if args.device == "cuda" else "32-true",
            enable_checkpointing=False,
            default_root_dir=args.out,
            callbacks=[Profile(prof), NonFiniteGuard(), RNGState(), RunSummary()],
        )
        with contextlib.redirect_stderr(io.StringIO()):
            trainer.fit(module, dm)
    sort = "self_cuda_time_total" if args.device == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=25))
    trace = Path(args.out) / f"trace-{args.device}.json"
    prof.export_chrome_trace(str(trace))
    print(f"Chrome trace: {trace}")


if __name__ == "__main__":
    main()
