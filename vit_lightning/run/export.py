"""`python -m vit_lightning export`: a checkpoint's network as an ONNX file or a torch.export program.

LightningCLI builds each subcommand from the Trainer method of that name (the method's arguments
become the subcommand's): `vit_lightning.run.trainer.Trainer.export` calls `export_run` here, and
the `ExportSubcommand` CLI mixin registers the subcommand. Export runs no Trainer loop: it loads the checkpoint's
weights into the configured model, traces the network on the CPU, writes the file and checks it.

- The batch size is dynamic; so are height and width, in multiples of the patch size, when the
  network was built with `dynamic_img_size=True`.
- Before the file is moved into place, its outputs are compared with the checkpoint's model at two
  batch sizes (and two image sizes when dynamic): in ONNX Runtime for ONNX, in PyTorch for
  torch.export. A mismatch is an error and leaves no file.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.export import Dim

from vit_lightning.errors import ConfigError, UserError
from vit_lightning.models.vit import _pair  # the model's own size rule
from vit_lightning.run.checkpoints import AtomicCheckpointIO
from vit_lightning.run.files import is_local

Format = Literal["onnx", "torch.export"]
SUFFIX = {"onnx": ".onnx", "torch.export": ".pt2"}
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")  # pyproject's `export` extra
TRACE_BATCH = 2  # torch.export specialises sizes 0 and 1, so trace with neither
CHECK_BATCHES = (1, 3)  # both differ from the traced batch
TOLERANCE = 1e-4  # absolute and relative: ONNX Runtime's float32 kernels against PyTorch's
ONNX_SINGLE_FILE = 2**31 - 2**27  # bytes of weights that fit protobuf's 2 GiB with the graph


def export_run(
    trainer: L.Trainer,
    model: L.LightningModule,
    ckpt_path: str | None,
    datamodule: L.LightningDataModule | None = None,
    format: Format = "onnx",
    output: str | None = None,
    weights_only: bool | None = None,
) -> Path:
    """`Trainer.export` (the `export` subcommand): its arguments are documented there."""
    path = Path(output or Path(trainer.default_root_dir) / f"model{SUFFIX[format]}")
    check_output(path)  # before the checkpoint is read and traced
    if ckpt_path is not None:
        load_weights(model, ckpt_path, trainer.default_root_dir, weights_only)
    net = getattr(model, "net", model)
    in_chans = getattr(datamodule, "in_chans", None) or net.in_chans
    img_size = _pair(getattr(datamodule, "img_size", None) or net.patch_embed.img_size)
    checked = export_model(model, (in_chans, *img_size), path, format)
    source = ckpt_path or "the untrained model (--ckpt_path=none)"
    rank_zero_info(f"Exported {source} to {path} ({format}); {checked}")
    return path


class ExportSubcommand(LightningCLI):
    """LightningCLI plus `export`, which takes its arguments from `Trainer.export` and runs it
    (the CLI's `trainer_class` is `vit_lightning.run.trainer.Trainer`, which has that method)."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # the set: arguments the CLI passes itself, not read from the command line
        return {**LightningCLI.subcommands(), "export": {"model", "datamodule"}}

    def parse_arguments(self, parser: Any, args: Any) -> None:
        super().parse_arguments(parser, args)
        if self.config.get("subcommand") == "export":
            self.config.export.trainer.logger = False  # nothing to log: no W&B run, no probe


def load_weights(
    model: L.LightningModule,
    ckpt_path: str,
    root: str | os.PathLike = ".",
    weights_only: bool | None = None,
) -> None:
    """Load a checkpoint's state_dict into `model`, with errors that name the file and the fix."""
    if is_local(ckpt_path) and not os.path.isfile(ckpt_path):  # a URL: the IO names a miss
        if ckpt_path == "last":
            raise ConfigError(
                f"--ckpt_path=last: no checkpoint under {root} (last.ckpt, on_exception.ckpt or "
                "hpc_ckpt_*.ckpt); train with `fit` first, or pass a .ckpt file"
            )
        what = "is a directory" if os.path.isdir(ckpt_path) else "does not exist"
        raise ConfigError(f"--ckpt_path={ckpt_path}: {what}; pass a .ckpt file, `last` or `best`")
    # names a damaged file
    checkpoint = AtomicCheckpointIO().load_checkpoint(ckpt_path, weights_only=weights_only)
    model.on_load_checkpoint(checkpoint)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (KeyError, RuntimeError) as e:
        lines = [s.strip() for s in str(e).splitlines() if s.strip()][:3]
        raise ConfigError(
            f"Checkpoint {ckpt_path} does not fit the configured model ({' '.join(lines)}); "
            "export with the config it was trained with, e.g. its run's config.yaml"
        ) from e


def check_output(output: Path) -> None:
    """An export never replaces a file: a folder or an existing file is named, with the fix."""
    if output.is_dir():
        raise ConfigError(f"--output={output} is a directory; give a file name")
    if output.exists():
        raise ConfigError(
            f"--output={output} exists (an earlier export's) and is kept; pass another --output, "
            "or delete that file to export again"
        )


def dynamic_shapes(net: nn.Module) -> tuple[dict[int, Any]]:
    """torch.export's spec for the (B, C, H, W) input: B dynamic, and H, W as multiples of the
    patch size for a network built with dynamic_img_size=True. torch.export assumes that a size
    traced as 2 or more never becomes 1, so an image needs at least 2 patches per side."""
    dims: dict[int, Any] = {0: Dim("batch", min=1)}
    if getattr(net, "dynamic_img_size", False):
        ph, pw = _pair(net.patch_embed.patch_size)
        dims[2] = ph * Dim("patches_h", min=2)
        dims[3] = pw * Dim("patches_w", min=2)
    return (dims,)


def export_model(
    model: nn.Module, input_size: tuple[int, int, int], output: str | Path, format: Format = "onnx"
) -> str:
    """Trace `model.net` (or `model`), write `output`, check it against `model`; says what it checked.

    The file is written and checked in a temporary folder next to `output`, then moved into place,
    so a failed export leaves nothing; an existing `output` is an error (`check_output`).
    """
    if format == "onnx":
        missing = [p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None]
        if missing:
            raise ConfigError(
                f"--format=onnx needs {', '.join(missing)}: pip install 'vit-lightning[export]'"
            )
    output = Path(output)
    check_output(output)
    model = model.cpu().eval()
    net = getattr(model, "net", model)
    example = torch.randn(TRACE_BATCH, *input_size, generator=torch.Generator().manual_seed(0))
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.") as tmp:
            staged = Path(tmp) / output.name
            run = _write(net, example, staged, format)
            with torch.no_grad():
                checked = _check(model, run, input_size, net, format)
            # external weights (`<name>.data`, models over 2 GiB) first, the file naming them last
            for f in sorted(Path(tmp).iterdir(), key=lambda p: p == staged):
                os.replace(f, output.parent / f.name)
    except OSError as e:
        raise UserError(f"Cannot write {output}: {e.strerror or e}") from e
    return checked


def _write(net: nn.Module, example: torch.Tensor, path: Path, format: Format) -> Callable:
    """Export `net` to `path`; returns a function that runs the written file on a tensor."""
    shapes = dynamic_shapes(net)
    if format == "torch.export":
        torch.export.save(torch.export.export(net, (example,), dynamic_shapes=shapes), path)
        program = torch.export.load(path).module()
        return lambda x: program(x)
    import onnxruntime

    weights = sum(t.numel() * t.element_size() for t in net.state_dict().values())
    torch.onnx.export(
        net,
        (example,),
        str(path),
        dynamo=True,
        dynamic_shapes=shapes,
        input_names=["image"],
        output_names=["logits"],
        external_data=weights > ONNX_SINGLE_FILE,
        verbose=False,
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"image": x.numpy()})[0])


def _check(model: nn.Module, run: Callable, input_size: tuple, net: nn.Module, fmt: str) -> str:
    """Compare `run` with `model` at CHECK_BATCHES, and at a second image size when dynamic."""
    c, h, w = input_size
    sizes = [(h, w)]
    if getattr(net, "dynamic_img_size", False):
        ph, pw = _pair(net.patch_embed.patch_size)
        sizes.append((h + 2 * ph, w + pw))
    generator, worst = torch.Generator().manual_seed(1), 0.0
    for size in sizes:
        for b in CHECK_BATCHES:
            x = torch.randn(b, c, *size, generator=generator)
            expected = model(x)
            try:
                got = run(x)
            except Exception as e:  # e.g. a size guard: the export fixed a size it should not
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                raise UserError(
                    f"The exported model fails at input {tuple(x.shape)}, which the checkpoint's "
                    f"model takes ({type(e).__name__}: {first}); nothing was written"
                ) from e
            same = got.shape == expected.shape
            diff = (got - expected).abs().max().item() if same else float("inf")
            if not (same and torch.allclose(got, expected, rtol=TOLERANCE, atol=TOLERANCE)):
                raise UserError(
                    f"The exported model's outputs differ from the checkpoint's at input "
                    f"{tuple(x.shape)} (max |diff| {diff:.3g}, tolerance {TOLERANCE:g}); "
                    "nothing was written"
                )
            worst = max(worst, diff)
    engine = "ONNX Runtime" if fmt == "onnx" else "PyTorch"
    where = " and ".join(f"{a}x{b}" for a, b in sizes)
    return (
        f"dynamic batch{', height and width' if len(sizes) > 1 else ''}; outputs match the "
        f"checkpoint's in {engine} at batch {' and '.join(map(str, CHECK_BATCHES))}, "
        f"{where} (max |diff| {worst:.2g})"
    )
