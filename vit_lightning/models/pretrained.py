"""`load_pretrained`: weights from a file, a checkpoint of this template, a timm model name or the
Hugging Face Hub, fitted to a model for fine-tuning (new image size, patch size, class count or
channel count) and loaded strictly otherwise.

Not model code, so it may import timm and huggingface_hub (both come with timm); timm only for
timm names, as its import takes seconds.
"""

from __future__ import annotations

import difflib
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vit_lightning.errors import ConfigError, UserError
from vit_lightning.models.vit import checkpoint_filter_fn

HEAD = "head."  # timm's pretrained_cfg["classifier"]: reinitialised when the class count differs
FIRST_CONV = "patch_embed.proj.weight"  # timm's pretrained_cfg["first_conv"]: adapted to in_chans
NET = "net."  # ViTClassifier keeps the network at `self.net`, so its checkpoint keys start so
LIGHTNING_KEY = "pytorch-lightning_version"  # in every checkpoint Lightning writes
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile, as timm's clean_state_dict
HUB_PREFIX = "hf-hub:"
HUB_WEIGHTS = "pytorch_model.bin"  # timm's default file name in a Hub repo
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")
PROBE_TIMEOUT_S = 3.0  # huggingface_hub retries a dead network for ~25 s; one probe bounds it


@dataclass
class PretrainedReport:
    """What `load_pretrained` did, key by key."""

    source: str  # as given: a path, a timm name or hf-hub:<org>/<repo>
    file: str  # the file read (for names, in the Hugging Face cache)
    loaded: list[str] = field(default_factory=list)  # model keys set from the weights
    resampled: list[str] = field(default_factory=list)  # "key: old shape -> new shape"
    reinitialised: list[str] = field(default_factory=list)  # model keys left at their fresh init
    skipped: list[str] = field(default_factory=list)  # "key: why" for weights not loaded

    def summary(self) -> str:
        lines = [
            f"Pretrained weights {self.source} ({self.file}): loaded {len(self.loaded)} tensors"
        ]
        for name in ("resampled", "reinitialised", "skipped"):
            if keys := getattr(self, name):
                lines.append(f"  {name}: {'; '.join(keys)}")
        return "\n".join(lines)


def load_pretrained(
    model: nn.Module, source: str | Path, *, strict: bool = True
) -> PretrainedReport:
    """Load pretrained weights into `model` for fine-tuning.

    Args:
        model: The network (e.g. `ViTClassifier.net`), a VisionTransformer of ours or timm's.
        source: A weights file (.pth, .pt, .bin, .safetensors; a state_dict, also wrapped in
            {'model': ...} or {'state_dict': ...}), a .ckpt of this template's ViTClassifier, a
            timm model name ('vit_small_patch16_224.augreg_in21k_ft_in1k') or 'hf-hub:<org>/<repo>'.
        strict: Fail on any key or shape that does not fit (beyond the position embedding, patch
            size, channel count and head, which are adapted); False loads what fits and reports
            the rest.

    Returns:
        The report, whose summary is also logged once (rank zero).
    """
    source = str(source)
    file = _resolve(source)
    report = PretrainedReport(source=source, file=str(file))
    state_dict = _fit(read_state_dict(file), model, report, strict)
    model.load_state_dict(state_dict, strict=False)  # _fit checked every key; the rest is reported
    return report  # the caller prints report.summary() (rank 0 only: ViTClassifier)


def adapt_input_conv(in_chans: int, weight: torch.Tensor) -> torch.Tensor:
    """timm's adaptation of a first conv to another channel count. One channel sums the kernels,
    so a grey image gives the features its RGB copy gave; more channels repeat them, scaled by
    old/new channels to keep the activations' size."""
    dtype, w = weight.dtype, weight.float()  # half-precision sums are slow or missing on CPU
    if in_chans == 1:
        w = w.sum(dim=1, keepdim=True)  # (O, 1, kh, kw)
    else:
        base = w.shape[1]
        w = w.repeat(1, math.ceil(in_chans / base), 1, 1)[:, :in_chans] * (base / in_chans)
    return w.to(dtype)


def local_problem(source: str) -> str | None:
    """What is wrong with `source` as a local file, without touching the network: None for an
    existing file, a Hub id or a timm name (those are resolved when the weights load)."""
    if source.startswith(HUB_PREFIX):
        return None
    path = Path(source).expanduser()
    if path.is_file():
        return None
    if path.exists():
        return f"pretrained weights {source}: a folder; pass the weights file in it"
    if any(c in source for c in "/\\") or source[0] in "~." or path.suffix in WEIGHT_SUFFIXES:
        return (
            f"pretrained weights {source}: no such file. Check the path (a Hub repo is written "
            "hf-hub:<org>/<repo>, a timm model by its name)"
        )
    return None


def _resolve(source: str) -> Path:
    if source.startswith(HUB_PREFIX):
        return _hub_file(source.removeprefix(HUB_PREFIX), _with_safetensors(HUB_WEIGHTS))
    if problem := local_problem(source):
        raise ConfigError(problem)
    path = Path(source).expanduser()
    return path if path.is_file() else _timm_file(source)


def _timm_file(name: str) -> Path:
    import timm  # seconds to import: only for timm names
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:  # a timm architecture with another pretrained tag
        cfg = None
    if cfg is None or not cfg.hf_hub_id:
        names = timm.list_models(pretrained=True)  # "arch.tag"; suggest archs for an arch
        names = names if "." in name else sorted({n.split(".")[0] for n in names})
        close = difflib.get_close_matches(name, names, n=3)
        raise ConfigError(
            f"pretrained weights {name!r}: not a file, nor a timm model name with weights on the "
            "Hugging Face Hub"
            + (f"; did you mean {', '.join(close)}?" if close else ".")
            + " timm.list_models(pretrained=True) lists the names; or pass a file path or "
            "hf-hub:<org>/<repo>"
        )
    return _hub_file(cfg.hf_hub_id, _with_safetensors(cfg.hf_hub_filename or HUB_WEIGHTS))


def _with_safetensors(filename: str) -> tuple[str, ...]:
    """The safetensors twin first, as timm's load_state_dict_from_hf prefers it."""
    twins = {
        HUB_WEIGHTS: "model.safetensors",
        "open_clip_pytorch_model.bin": "open_clip_model.safetensors",
    }
    twin = twins.get(filename, filename.removesuffix(".bin") + ".safetensors")
    return (twin, filename) if filename.endswith(".bin") else (filename,)


def _hub_file(repo: str, filenames: tuple[str, ...]) -> Path:
    """The cached file when there is one; a download only when huggingface.co answers."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    repo_id, _, revision = repo.partition("@")
    try:
        for name in filenames:
            cached = try_to_load_from_cache(repo_id, name, revision=revision or None)
            if isinstance(cached, str):  # else None, or a marker for "known not to exist"
                return Path(cached)
    except ValueError as e:  # HFValidationError: not an <org>/<repo> id
        raise ConfigError(f"pretrained weights {repo}: not a Hugging Face Hub repo id ({e})") from e
    if not _hub_reachable():
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "no network to the Hub"
        raise UserError(
            f"pretrained weights {repo}: not in the Hugging Face cache ({constants.HF_HUB_CACHE})"
            f" and {why}. On a machine with network run `hf download {repo_id} {filenames[0]}` "
            "(`huggingface-cli download` with older huggingface_hub), then copy its Hugging Face "
            "cache here and point HF_HOME at it, or pass the downloaded file's path instead"
        )
    for name in filenames:
        try:
            return Path(hf_hub_download(repo_id, name, revision=revision or None))
        except HfHubHTTPError as e:
            if isinstance(e, EntryNotFoundError):  # not this file name: try the next
                continue
            raise UserError(
                f"pretrained weights {repo}: the Hub refused it ({type(e).__name__}: "
                f"{_first_line(e)}). Check the id; private or gated repos need `hf auth login`"
            ) from e
    raise ConfigError(
        f"pretrained weights {repo}: the repo has none of {', '.join(filenames)}; download the "
        "weights file and pass its path"
    )


def _hub_reachable() -> bool:
    """One HEAD to the Hub in a thread, so a hanging DNS lookup is bounded too."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.HF_HUB_OFFLINE:
        return False
    answered: list[bool] = []

    def probe() -> None:
        try:
            get_session().head(constants.ENDPOINT, timeout=PROBE_TIMEOUT_S)
            answered.append(True)  # any HTTP answer: the Hub is there
        except Exception:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(PROBE_TIMEOUT_S + 1)
    return bool(answered)


def read_state_dict(file: Path, what: str = "pretrained weights") -> dict[str, torch.Tensor]:
    """The network's state_dict from a timm-style file or a ViTClassifier checkpoint; errors
    start with `what` and the file."""
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(file, device="cpu")
        else:
            obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(
            f"{what} {file}: cannot be read ({type(e).__name__}: {_first_line(e)}). "
            "Expected a state_dict from torch.save (.pth, .pt, .bin, .ckpt; tensors only, read "
            "with weights_only=True) or safetensors' save_file (.safetensors)"
        ) from e
    if not isinstance(obj, dict):
        raise ConfigError(f"{what} {file}: holds a {type(obj).__name__}, not a state_dict")
    if LIGHTNING_KEY in obj:  # a Lightning checkpoint: ours holds the network under `net.`
        sd = obj.get("state_dict", {})
        obj = {k.removeprefix(NET): v for k, v in sd.items() if k.startswith(NET)}
        if not obj:
            raise ConfigError(
                f"{what} {file}: a checkpoint of another LightningModule (its "
                f"state_dict has no {NET!r} keys: {_few(list(sd))}). Checkpoints of "
                "vit_lightning.module.ViTClassifier load here; for another, save its network's "
                "state_dict to a .pth and pass that"
            )
    for wrapper in ("model", "state_dict"):  # timm's checkpoint_filter_fn unwraps these
        if isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    sd = {_clean(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise ConfigError(f"{what} {file}: holds no tensors (keys: {_few(list(obj))})")
    return sd


def _clean(key: str) -> str:
    while key.startswith(WRAPPER_PREFIXES):  # each prefix is one dotted name, in either order
        key = key.split(".", 1)[1]
    return key


def _fit(
    sd: dict[str, torch.Tensor], model: nn.Module, report: PretrainedReport, strict: bool
) -> dict[str, torch.Tensor]:
    """`sd` resampled to `model`, its head dropped where it cannot fit; raises on anything else."""
    before = {k: tuple(v.shape) for k, v in sd.items()}
    if isinstance(getattr(model, "patch_embed", None), nn.Module):  # a ViT: new grid, patch size
        try:
            sd = dict(checkpoint_filter_fn(sd, model))
        except ValueError as e:  # e.g. a pos_embed whose grid cannot be told
            raise ConfigError(f"pretrained weights {report.source}: {e}") from e
    own = model.state_dict()
    conv = sd.get(FIRST_CONV)
    chans = own[FIRST_CONV].shape[1] if FIRST_CONV in own else None
    if conv is not None and conv.ndim == 4 and chans is not None and conv.shape[1] != chans:
        sd[FIRST_CONV] = adapt_input_conv(chans, conv)  # e.g. RGB weights, grey Fashion-MNIST
    report.resampled = [
        f"{k}: {before[k]} -> {tuple(v.shape)}"
        for k, v in sd.items()
        if k in before and tuple(v.shape) != before[k]
    ]

    own_head = [k for k in own if k.startswith(HEAD)]
    sd_head = [k for k in sd if k.startswith(HEAD)]
    if not own_head:  # num_classes=0: an Identity head
        report.skipped += [f"{k}: the model has no head" for k in sd_head]
    elif any(k not in sd or sd[k].shape != own[k].shape for k in own_head):  # other classes
        report.reinitialised += own_head
    else:
        sd_head = []
    sd = {k: v for k, v in sd.items() if k not in sd_head}

    mismatched = [k for k in own if k in sd and sd[k].shape != own[k].shape]  # model order
    missing = [k for k in own if k not in sd and k not in report.reinitialised]
    unexpected = [k for k in sd if k not in own]
    if strict and (mismatched or missing or unexpected):
        raise _misfit(report.source, sd, own, mismatched, missing, unexpected)
    report.reinitialised += missing + mismatched
    report.skipped += [f"{k}: not in the model" for k in unexpected] + [
        f"{k}: {tuple(sd[k].shape)}, the model {tuple(own[k].shape)}" for k in mismatched
    ]
    sd = {k: v for k, v in sd.items() if k in own and k not in mismatched}
    report.loaded = list(sd)
    return sd


def _misfit(
    source: str,
    sd: dict[str, torch.Tensor],
    own: dict[str, torch.Tensor],
    mismatched: list[str],
    missing: list[str],
    unexpected: list[str],
) -> ConfigError:
    shapes = [f"{k}: weights {tuple(sd[k].shape)}, model {tuple(own[k].shape)}" for k in mismatched]
    lines = [
        f"  {what} ({len(keys)}): {_few(keys)}"
        for what, keys in (
            ("shapes differ", shapes),
            ("missing from the weights", missing),
            ("not in the model", unexpected),
        )
        if keys
    ]
    return ConfigError(
        f"pretrained weights {source} do not fit the model (weights: {_arch(sd)}; model: "
        f"{_arch(own)}):\n" + "\n".join(lines) + "\nBuild the model the weights were trained as "
        "(model.net.init_args: depth, embed_dim, num_heads, mlp_ratio, ...); image size, patch "
        "size, in_chans and num_classes may differ. Or pass strict=False to load what fits"
    )


def _arch(sd: dict[str, torch.Tensor]) -> str:
    """'depth 12, embed_dim 384' from a ViT state_dict's keys, to say what differs."""
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    width = next((sd[k].shape[-1] for k in ("pos_embed", "cls_token") if k in sd), "?")
    return f"depth {depth}, embed_dim {width}"


def _few(keys: list[str], n: int = 4) -> str:
    return "; ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0]


def check_state_dict_fits(model: torch.nn.Module, sd: Mapping[str, Any]) -> None:
    """A checkpoint of another architecture or class count, named key by key (load_state_dict
    would raise a traceback that lists every key)."""
    own = model.state_dict()
    lines = [
        f"{k}: checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)}"
        for k, v in sd.items()
        if k in own and hasattr(v, "shape") and v.shape != own[k].shape
    ]
    if getattr(model, "strict_loading", True):
        missing, extra = [k for k in own if k not in sd], [k for k in sd if k not in own]
        for what, keys in (("missing in the checkpoint", missing), ("not in the model", extra)):
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            lines += [f"{what}: {', '.join(keys[:3])}{more}"] if keys else []
    if not lines:
        return
    try:
        path = f" {model.trainer.ckpt_path}"
    except (AttributeError, RuntimeError):  # not attached to a trainer: load_from_checkpoint
        path = ""
    listed = "\n".join(f"  {line}" for line in lines[:8])
    raise ConfigError(
        f"checkpoint{path} does not fit the configured model:\n{listed}\nThe config must build "
        "the model the checkpoint was trained with: the same model.net settings and "
        "data.num_classes, in_chans and img_size (the run's config.yaml has them)"
    )
