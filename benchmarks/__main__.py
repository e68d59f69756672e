"""`make bench` / `python -m benchmarks`: every benchmark side by side, one table file per device.

Writes benchmarks/results-<device>.md and copies it into docs/performance.md between the markers
`<!-- bench:<device>:start -->` and `<!-- bench:<device>:end -->`. The measured training
experiments (transfer, distillation, the two augmentation paths) are multirun files in
configs/experiments/, each reproduced by `multirun --spec` and `compare` (docs/experiments.md).
"""

from __future__ import annotations

import argparse
import logging
import platform
import re
import tempfile
import time
import warnings
from pathlib import Path

import lightning
import timm
import torch

from benchmarks import data_pipeline, model, overhead
from benchmarks.common import ROOT


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    return f"{cpu}, {torch.get_num_threads()} threads"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds; medians reported")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile columns")
    p.add_argument("--only", nargs="*", default=None, help="model overhead data gpu")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("torch").setLevel(logging.ERROR)
    torch.set_float32_matmul_precision("high")  # TF32 on GPU, as Lightning suggests; no-op on CPU
    cuda, compiled = args.device == "cuda", not args.no_compile
    amp = torch.bfloat16 if cuda else None  # bf16 autocast is slower than fp32 on most CPUs
    only = set(args.only or ["model", "overhead", "data", "gpu"])
    start = time.time()
    sections = [
        f"Measured {time.strftime('%Y-%m-%d')} on **{device_name(args.device)}**, "
        f"{'bf16 autocast' if cuda else 'fp32'}; torch {torch.__version__}, timm {timm.__version__}, "
        f"lightning {lightning.__version__}. Medians of {args.repeats} interleaved repeats."
    ]
    with tempfile.TemporaryDirectory() as tmp:
        if "model" in only:
            print("ours vs timm ...", flush=True)
            sections.append(
                "#### Our ViT against timm's (same config, same weights)\n\n"
                + model.run(args.device, args.repeats, compiled, amp)
            )
        if "overhead" in only:
            print("Lightning overhead ...", flush=True)
            sections.append(
                "#### Lightning `fit()` against a bare PyTorch loop\n\n"
                + overhead.run(args.device, args.repeats, tmp)
            )
        if "data" in only:
            print("data pipeline ...", flush=True)
            sections.append(
                "#### Data pipeline: train loader against the model\n\n"
                + data_pipeline.run(args.device, 3, Path(tmp) / "cifar", compiled)
            )
        if cuda and "gpu" in only:
            from benchmarks import gpu

            print("GPU: MFU and CIFAR epochs ...", flush=True)
            sections.append("#### Model FLOPs utilisation\n\n" + gpu.mfu(args.repeats))
            sections.append("#### CIFAR-10 epoch\n\n" + gpu.cifar_epochs(Path(tmp) / "cifar", 8))
    text = "\n\n".join(sections) + f"\n\n_Benchmark wall time: {time.time() - start:.0f} s._\n"
    print("\n" + text)
    out = ROOT / "benchmarks" / f"results-{args.device}.md"
    out.write_text(text)
    page = ROOT / "docs" / "performance.md"
    start_m, end_m = f"<!-- bench:{args.device}:start -->", f"<!-- bench:{args.device}:end -->"
    body = page.read_text()
    if start_m in body and end_m in body:
        pattern = re.escape(start_m) + ".*?" + re.escape(end_m)
        page.write_text(re.sub(pattern, lambda _: f"{start_m}\n{text}{end_m}", body, flags=re.S))
        print(f"wrote {out.relative_to(ROOT)} and its copy in docs/performance.md")
    else:
        print(f"wrote {out.relative_to(ROOT)} (docs/performance.md has no {start_m} marker)")


if __name__ == "__main__":
    main()
