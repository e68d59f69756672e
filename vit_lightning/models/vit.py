"""A Vision Transformer written from scratch, state_dict-compatible with timm's VisionTransformer.

Layering, names and initialisation follow timm (`timm/models/vision_transformer.py`), so that a
state_dict moves between the two with `strict=True` and the same seed builds the same weights. The
layers live in `layers.py`, as timm's live in `timm/layers`, and are re-exported here. This file
never imports timm; `tests/test_vit_parity.py` and `tests/test_vit_api.py` check the equivalence.
The small-data options (CCT's tokenizer and sequence pooling, SPT, LSA) are off by default; with
them on the model is no longer timm's (`tests/test_vit_small_data.py` pins them to their papers).

Shapes: B batch, C channels, H/W image size, p patch size, N tokens (prefix + patches), D embed dim.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing
from torch.nn.modules import module as nn_module
from torch.utils.checkpoint import checkpoint

from vit_lightning.errors import ConfigError
from vit_lightning.models.layers import (
    Attention,
    Block,
    ConvTokenizer,
    DropPath,
    LayerNorm,
    LayerScale,
    LocalitySelfAttention,
    Mlp,
    PatchEmbed,
    SeqPool,
    ShiftedPatchEmbed,
    _pair,
    drop_path,
    drop_path_rates,
    feature_take_indices,
    resample_abs_pos_embed,
    resample_patch_embed,
    trunc_normal_,
)
from vit_lightning.models.pos_embed import build_sincos2d_pos_embed

__all__ = [
    "VisionTransformer",
    "PatchEmbed",
    "ConvTokenizer",
    "ShiftedPatchEmbed",
    "Attention",
    "LocalitySelfAttention",
    "SeqPool",
    "Mlp",
    "LayerScale",
    "LayerNorm",
    "DropPath",
    "Block",
    "drop_path",
    "drop_path_rates",
    "feature_take_indices",
    "trunc_normal_",
    "resample_abs_pos_embed",
    "resample_patch_embed",
    "build_sincos2d_pos_embed",
    "checkpoint_filter_fn",
    "vit_tiny_patch16_224",
    "vit_small_patch16_224",
    "vit_base_patch16_224",
    "vit_tiny_patch4_32",
    "vit_small_patch4_32",
]

# fx traces the resampling as one call: its size arithmetic runs on the real shapes.
torch.fx.wrap("resample_abs_pos_embed")

POOLS = ("token", "avg", "")  # '' is no pooling: the head runs on every token, as in timm
POS_EMBEDS = ("learn", "sincos", "none", "")  # '' is timm's other spelling of 'none'
EMBED_LAYERS = {"patch": PatchEmbed, "conv": ConvTokenizer, "spt": ShiftedPatchEmbed}
ATTN_LAYERS = {"": Attention, "attn": Attention, "lsa": LocalitySelfAttention}  # timm's '', 'attn'
# The switches timm's VisionTransformer lacks (or takes as a class), and their defaults: the
# plain ViT, timm's. tests/test_vit_parity.py holds every other argument to timm's name and default.
SMALL_DATA_OPTIONS = dict(
    embed_layer="patch", conv_layers=1, conv_kernel=3, conv_channels=64, attn_layer="attn"
)
MIN_GRID = 2  # tokens per side below which a tokenizer leaves nothing for attention to relate


class VisionTransformer(nn.Module):
    """Vision Transformer (Dosovitskiy et al., 2020), a drop-in for timm's VisionTransformer.

    Args:
        img_size: Input image size.
        patch_size: Patch size; must divide img_size.
        in_chans: Number of input image channels.
        num_classes: Number of classes of the linear head (0 for no head).
        global_pool: 'token' reads the [CLS] token, 'avg' averages the patch tokens, 'seq' is
            CCT's sequence pooling: a softmax over the patch tokens of a learned Linear(D, 1)
            score (`seq_pool`), on the final-normed tokens, weights their sum. CCT has no [CLS]:
            pair it with class_token=False.
        embed_dim: Token dimension.
        depth: Number of Transformer blocks.
        num_heads: Attention heads per block.
        mlp_ratio: MLP hidden size as a multiple of embed_dim.
        qkv_bias: Bias on the qkv projection.
        qk_norm: LayerNorm on each head's queries and keys, which bounds the attention logits.
        init_values: LayerScale initial value; None or 0 disables LayerScale.
        class_token: Prepend a learnable [CLS] token.
        pos_embed: 'learn' a position table, 'sincos' for the fixed 2-D sin-cos one (MoCo v3's: a
            Parameter with requires_grad=False, so it is in the state_dict and is resampled for
            other sizes as a learned table is), or 'none'.
        no_embed_class: Position embeddings for the patches only; prefix tokens get none (DeiT III).
        reg_tokens: Number of learnable register tokens after [CLS] (Darcet et al., 2023).
        dynamic_img_size: Accept any input size divisible by patch_size, resampling pos_embed.
        drop_rate: Dropout before the head.
        pos_drop_rate: Dropout after adding position embeddings.
        proj_drop_rate: Dropout after the attention projection and in the MLP.
        attn_drop_rate: Dropout on attention weights.
        drop_path_rate: Stochastic depth of the last block; earlier blocks ramp up linearly from 0.
        weight_init: '' for timm's default init; 'skip' leaves it to the caller (a subclass that
            adds parameters first, as `VisionTransformerDistilled`).
        embed_layer: How the image becomes tokens. 'patch': a p×p conv with stride p (timm's
            PatchEmbed). 'conv': CCT's tokenizer (Hassani et al., 2021), conv_layers × [conv
            conv_kernel×conv_kernel without bias -> ReLU -> max-pool 3×3 stride 2], its grid
            ceil(img_size / 2) per layer for a 3×3 kernel; patch_size is not used. 'spt':
            shifted patch tokenization (Lee et al., 2021), the image and its 4 diagonal
            half-patch shifts (5C channels) cut into patches, LayerNorm, Linear; patch_size >= 2.
        conv_layers: Number of conv-ReLU-pool stages of embed_layer='conv'.
        conv_kernel: Odd kernel side of embed_layer='conv'; stride max(1, k//2 - 1), as CCT's.
        conv_channels: Channels of the stages before the last of embed_layer='conv' (CCT's 64).
        attn_layer: 'attn' (or '') for timm's attention; 'lsa' for locality self-attention (Lee
            et al., 2021): a learned temperature per head (`attn.scale`, started at
            1/√head_dim) and the diagonal masked, so no token attends to itself.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: Literal["token", "avg", "seq"] = "token",
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        init_values: float | None = None,
        class_token: bool = True,
        pos_embed: Literal["learn", "sincos", "none"] = "learn",
        no_embed_class: bool = False,
        reg_tokens: int = 0,
        dynamic_img_size: bool = False,
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        weight_init: Literal["", "skip"] = "",
        embed_layer: Literal["patch", "conv", "spt"] = "patch",
        conv_layers: int = 1,
        conv_kernel: int = 3,
        conv_channels: int = 64,
        attn_layer: Literal["attn", "lsa", ""] = "attn",
    ) -> None:
        super().__init__()
        _check_args(locals())
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = (1 if class_token else 0) + reg_tokens
        self.num_reg_tokens = reg_tokens
        self.has_class_token = class_token
        self.no_embed_class = no_embed_class
        self.pos_embed_type = pos_embed or "none"
        self.dynamic_img_size = dynamic_img_size
        self.grad_checkpointing = False
        use_fc_norm = global_pool == "avg"  # timm: avg pooling moves the final norm after the pool

        if embed_layer == "conv":
            self.patch_embed = ConvTokenizer(
                img_size, in_chans, embed_dim, conv_layers, conv_kernel, conv_channels
            )
        else:
            self.patch_embed = EMBED_LAYERS[embed_layer](img_size, patch_size, in_chans, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, reg_tokens, embed_dim)) if reg_tokens else None
        embed_len = num_patches if no_embed_class else num_patches + self.num_prefix_tokens
        trained = self.pos_embed_type == "learn"  # 'sincos' is fixed, yet in the state_dict
        self.pos_embed = (
            nn.Parameter(torch.zeros(1, embed_len, embed_dim), requires_grad=trained)
            if self.pos_embed_type != "none"
            else None
        )
        self.pos_drop = nn.Dropout(pos_drop_rate)
        dpr = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.Sequential(
            *[
                Block(
                    embed_dim,
                    num_heads,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_norm=qk_norm,
                    proj_drop=proj_drop_rate,
                    attn_drop=attn_drop_rate,
                    init_values=init_values,
                    drop_path=dpr[i],
                    attn_layer=ATTN_LAYERS[attn_layer],
                )
                for i in range(depth)
            ]
        )
        reduction = max(self.patch_embed.patch_size)
        self.feature_info = [
            dict(module=f"blocks.{i}", num_chs=embed_dim, reduction=reduction) for i in range(depth)
        ]
        self.norm = nn.Identity() if use_fc_norm else LayerNorm(embed_dim)
        self.seq_pool = SeqPool(embed_dim) if global_pool == "seq" else None
        self.fc_norm = LayerNorm(embed_dim) if use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if weight_init != "skip":
            self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """timm's default ('') init, drawn in timm's order so a seed gives timm's exact weights."""
        if self.pos_embed_type == "sincos":  # prefix tokens' rows stay 0, as in MoCo v3 and MAE
            n = self.pos_embed.shape[1] - self.patch_embed.num_patches
            grid = self.patch_embed.grid_size
            sincos = build_sincos2d_pos_embed(grid, self.embed_dim, device=self.pos_embed.device)
            self.pos_embed.zero_()[0, n:] = sincos
        elif self.pos_embed is not None:
            trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        if self.reg_token is not None:
            nn.init.normal_(self.reg_token, std=1e-6)
        for m in self.modules():  # the conv keeps its default init, as in timm
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters that AdamW should not decay (besides norms and biases): timm's set, less
        the names this model does not have."""
        names = ("pos_embed", "cls_token", "reg_token", "dist_token")
        return {n for n in names if getattr(self, n, None) is not None}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm's parameter groups: the stem, then one per block with the final norm last. Layer-wise
        lr decay reads them: `timm.optim.create_optimizer_v2(model, 'adamw', layer_decay=0.75)`."""
        return dict(
            stem=r"^cls_token|reg_token|pos_embed|patch_embed|norm_pre",  # stem and embed
            blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in backward instead of keeping them: less memory for
        one more forward of the blocks. RNG state is replayed, so DropPath draws the same masks."""
        self.grad_checkpointing = enable

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head (and optionally the pooling), e.g. to fine-tune on other classes.

        As in timm, the norms stay where the model was built with them, and the new head takes the
        model's device, dtype and train/eval mode. 'seq' needs a model built with it (its
        `seq_pool`, as timm's 'map' needs its attn_pool); another pool removes `seq_pool`.
        """
        if global_pool is not None:
            if global_pool == "seq" and self.seq_pool is None:
                raise ConfigError.of(
                    self,
                    "global_pool='seq' needs the model built with global_pool='seq' (its seq_pool "
                    "weights); build it so, or use 'token', 'avg' or ''",
                )
            allowed = POOLS if self.seq_pool is None else (*POOLS[:-1], "seq", "")
            _check_pool(self, global_pool, self.has_class_token, allowed)
            self.global_pool = global_pool
            if global_pool != "seq":
                self.seq_pool = None
        self.num_classes = num_classes
        w = next(self.patch_embed.parameters())
        dd = dict(device=w.device, dtype=w.dtype)
        head = nn.Linear(self.embed_dim, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.head = head.train(self.training)

    def _check_input(self, x: torch.Tensor) -> tuple[int, int]:
        """Validate (B, C, H, W) and return the patch grid size, with errors that name the fix."""
        ph, pw = self.patch_embed.patch_size
        if is_fx_symbolic_tracing():  # symbolic shapes: no `if` on them, nothing to check
            return self.patch_embed.dynamic_feat_size((x.shape[-2], x.shape[-1]))
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ConfigError.of(
                self,
                f"expected input of shape (B, {self.in_chans}, H, W), got {tuple(x.shape)}; "
                f"the model was built with in_chans={self.in_chans}",
            )
        H, W = x.shape[-2:]
        if self.dynamic_img_size:
            if (H % ph or W % pw) and not isinstance(self.patch_embed, ConvTokenizer):
                raise ConfigError.of(
                    self,
                    f"input size {H}x{W} is not divisible by patch_size {ph}x{pw}; "
                    f"resize or pad the input to a multiple of the patch size",
                )
        elif self.patch_embed.img_size != (H, W):
            eh, ew = self.patch_embed.img_size
            raise ConfigError.of(
                self,
                f"expected input of shape (B, {self.in_chans}, {eh}, {ew}), got {tuple(x.shape)}; "
                f"resize the input or build the model with dynamic_img_size=True",
            )
        return self.patch_embed.dynamic_feat_size((H, W))

    def _prefix_tokens(self) -> list[torch.Tensor]:
        """The learned tokens put before the patches, in order, each (1, n, D): [CLS], registers."""
        return [t for t in (self.cls_token, self.reg_token) if t is not None]

    def _pos_embed(self, x: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
        """(B, H*W, D) patch tokens -> (B, N, D), prefix tokens in front, as timm's `_pos_embed`."""
        prefix = [t.expand(x.shape[0], -1, -1) for t in self._prefix_tokens()]
        if self.pos_embed is None:  # and no position dropout, as in timm
            return torch.cat([*prefix, x], dim=1)
        pos_embed = self.pos_embed
        if self.dynamic_img_size:
            n = 0 if self.no_embed_class else self.num_prefix_tokens
            pos_embed = resample_abs_pos_embed(pos_embed, grid_size, self.patch_embed.grid_size, n)
        if self.no_embed_class:  # the table covers the patches only: add it, then prepend
            x = x + pos_embed
        if prefix:
            x = torch.cat([*prefix, x], dim=1)  # (B, N, D)
        if not self.no_embed_class:
            x = x + pos_embed
        return self.pos_drop(x)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, N, D) tokens with [CLS] and position embeddings."""
        grid_size = self._check_input(x)
        return self._pos_embed(self.patch_embed(x), grid_size)

    def _block(self, blk: Block, x: torch.Tensor, first_only: int = 0) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(blk, x, first_only, use_reentrant=False)
        return blk(x, first_only)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        output_dict: bool = False,
    ) -> list | tuple[torch.Tensor, list] | dict[str, Any]:
        """The blocks' outputs along the forward pass, as timm's method of the same name.

        Args:
            x: (B, C, H, W) images.
            indices: Blocks to take: all if None, the last n if an int, else a list (-1 is the last).
            return_prefix_tokens: Pair each intermediate with its prefix tokens, (B, prefix, D).
            norm: Apply the final norm to the intermediates.
            stop_early: Run no block after the last one taken.
            output_fmt: 'NCHW' for (B, D, H/p, W/p) patch-token maps, 'NLC' for (B, H*W/p², D).
            intermediates_only: Return the intermediates alone, not the final normed tokens.
            output_dict: Return a dict with timm's keys 'image_intermediates',
                'image_intermediates_prefix' and 'image_features'.

        Returns:
            (final (B, N, D) tokens, intermediates), the intermediates alone, or the dict.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ConfigError.of(self, f"output_fmt={output_fmt!r} must be 'NCHW' or 'NLC'")
        take, max_index = feature_take_indices(len(self.blocks), indices)
        B, n = x.shape[0], self.num_prefix_tokens
        H, W = grid_size = self._check_input(x)
        x = self._pos_embed(self.patch_embed(x), grid_size)
        intermediates = []
        for i, blk in enumerate(self.blocks[: max_index + 1] if stop_early else self.blocks):
            x = self._block(blk, x)
            if i in take:
                intermediates.append(self.norm(x) if norm else x)
        prefix = [y[:, :n] for y in intermediates] if n else None
        intermediates = [y[:, n:] for y in intermediates]  # (B, H*W, D) patch tokens
        if output_fmt == "NCHW":
            intermediates = [
                y.reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous() for y in intermediates
            ]
        if output_dict:
            out: dict[str, Any] = {"image_intermediates": intermediates}
            if prefix is not None and return_prefix_tokens:
                out["image_intermediates_prefix"] = prefix
            if not intermediates_only:
                out["image_features"] = self.norm(x)
            return out
        if prefix is not None and return_prefix_tokens:
            intermediates = list(zip(intermediates, prefix, strict=True))
        return intermediates if intermediates_only else (self.norm(x), intermediates)

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the blocks after the last of `indices` (and the norm, the head) for a backbone."""
        take, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.fc_norm = nn.Identity()
            self.reset_classifier(0, "")
        return take

    def get_intermediate_layers(
        self,
        x: torch.Tensor,
        n: int | list[int] | tuple[int, ...] = 1,
        reshape: bool = False,
        return_prefix_tokens: bool = False,
        norm: bool = False,
    ) -> list:
        """DINO's interface to `forward_intermediates`: the last n blocks' (or blocks n's) tokens."""
        fmt = "NCHW" if reshape else "NLC"
        kw = dict(return_prefix_tokens=return_prefix_tokens, norm=norm, output_fmt=fmt)
        return self.forward_intermediates(x, n, intermediates_only=True, **kw)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) image -> (B, N, D) normalised tokens."""
        x = self._embed(x)
        if self.grad_checkpointing:
            for blk in self.blocks:
                x = self._block(blk, x)
        else:
            x = self.blocks(x)
        return self.norm(x)

    def pool(self, x: torch.Tensor, pool_type: str | None = None) -> torch.Tensor:
        """(B, N, D) -> (B, D): the [CLS] token ('token'), the patch-token mean ('avg') or their
        SeqPool-weighted sum ('seq'); '' keeps every token."""
        pool_type = self.global_pool if pool_type is None else pool_type
        if pool_type == "token":
            return x[:, 0]
        if pool_type == "seq":  # over the patch tokens, as timm's attention pools by default
            return self.seq_pool(x[:, self.num_prefix_tokens :])
        return x[:, self.num_prefix_tokens :].mean(dim=1) if pool_type == "avg" else x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, N, D) tokens -> (B, num_classes) logits, or the pooled (B, D) features if pre_logits."""
        x = self.head_drop(self.fc_norm(self.pool(x)))
        return x if pre_logits else self.head(x)

    def _tokens_observed(self) -> bool:
        """Whether anything could see the last block's or the norm's tokens: an fx trace, whose
        nodes must be the full forward's, or a hook on them, on `blocks` or global. Torch keeps
        the hook dicts private; tests/test_vit_api.py fails if they move."""
        if is_fx_symbolic_tracing() or _global_hooks() or _hooked(self.blocks):
            return True
        return any(_hooked(m) for m in (self.norm, *self.blocks[-1].modules()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_pool != "token" or self._tokens_observed():
            return self.forward_head(self.forward_features(x))
        # The head reads only the first k tokens, [CLS] (and DeiT's distillation token), so the
        # last block computes only their outputs: k queries instead of N, and proj and MLP on k
        # tokens. Same logits and DropPath draws as forward_head(forward_features(x)), which
        # still returns every token.
        k = self.num_prefix_tokens - self.num_reg_tokens  # the registers come after them
        x = self._embed(x)
        *blocks, last = self.blocks
        for blk in blocks:
            x = self._block(blk, x)
        return self.forward_head(self.norm(self._block(last, x, first_only=k)))

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-block attention weights, a list of depth tensors (B, heads, N, N), for visualisation.

        A separate, explicit-softmax pass: the default forward keeps the fused kernel.
        """
        maps = []
        x = self._embed(x)
        for blk in self.blocks:
            maps.append(blk.attn.attention_map(blk.norm1(x)))
            x = blk(x)
        return maps


def _hooked(m: nn.Module) -> bool:
    """Any forward or backward (pre-)hook on the module."""
    return bool(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
    )


def _global_hooks() -> bool:
    """Any hook on every module, from torch.nn.modules.module.register_module_*_hook."""
    g = nn_module
    hooks = (g._global_forward_hooks, g._global_forward_pre_hooks, g._global_backward_hooks)
    return any(hooks) or bool(g._global_backward_pre_hooks)


def _check_pool(
    owner: nn.Module, global_pool: str, class_token: bool, allowed: tuple[str, ...] = POOLS
) -> None:
    if global_pool not in allowed:
        names = ", ".join(map(repr, allowed[:-1])) + f" or {allowed[-1]!r}"
        raise ConfigError.of(owner, f"global_pool={global_pool!r} is not supported; use {names}")
    if global_pool == "token" and not class_token:
        raise ConfigError.of(
            owner, "global_pool='token' needs class_token=True; use global_pool='avg'"
        )


def _check_args(args: dict) -> None:
    """Fail at construction, naming the class and argument, not with a shape error at step 1."""
    me, img, patch = args["self"], _pair(args["img_size"]), _pair(args["patch_size"])
    _check_small_data_args(me, args)
    if args["embed_layer"] != "conv" and (img[0] % patch[0] or img[1] % patch[1]):
        raise ConfigError.of(
            me, f"img_size={args['img_size']} must be divisible by patch_size={args['patch_size']}"
        )
    if args["embed_dim"] % args["num_heads"]:
        raise ConfigError.of(
            me, f"embed_dim={args['embed_dim']} must be divisible by num_heads={args['num_heads']}"
        )
    _check_pool(me, args["global_pool"], args["class_token"], allowed=("token", "avg", "seq"))
    if args["pos_embed"] not in POS_EMBEDS:
        raise ConfigError.of(
            me, f"pos_embed={args['pos_embed']!r} must be 'learn', 'sincos' or 'none'"
        )
    if args["pos_embed"] == "sincos" and args["embed_dim"] % 4:
        try:
            build_sincos2d_pos_embed((1, 1), args["embed_dim"])  # raises, naming embed_dim
        except ConfigError as e:
            raise ConfigError.of(me, str(e)) from None
    if args["weight_init"] not in ("", "skip"):
        raise ConfigError.of(
            me,
            f"weight_init={args['weight_init']!r} is not supported; use '' (timm's default) "
            f"or 'skip'",
        )
    rates = ("drop_rate", "pos_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate")
    for name in rates:
        if not 0.0 <= args[name] < 1.0:
            raise ConfigError.of(me, f"{name}={args[name]} must be in [0, 1)")
    for name in ("depth", "num_heads", "embed_dim", "in_chans"):
        if args[name] < 1:
            raise ConfigError.of(me, f"{name}={args[name]} must be >= 1")
    if args["reg_tokens"] < 0:
        raise ConfigError.of(me, f"reg_tokens={args['reg_tokens']} must be >= 0")
    if args["num_classes"] < 0 or args["mlp_ratio"] <= 0:
        raise ConfigError.of(
            me,
            f"num_classes={args['num_classes']} must be >= 0 and mlp_ratio={args['mlp_ratio']} > 0",
        )


def _check_small_data_args(me: nn.Module, args: dict) -> None:
    """The small-data switches: known values, and no setting that its option would not use."""
    embed, attn = args["embed_layer"], args["attn_layer"]
    if embed not in EMBED_LAYERS:
        raise ConfigError.of(me, f"embed_layer={embed!r} must be 'patch', 'conv' or 'spt'")
    if attn not in ATTN_LAYERS:
        raise ConfigError.of(me, f"attn_layer={attn!r} must be 'attn' (or '') or 'lsa'")
    conv = ("conv_layers", "conv_kernel", "conv_channels")
    if embed != "conv":
        changed = [f"{n}={args[n]}" for n in conv if args[n] != SMALL_DATA_OPTIONS[n]]
        if changed:
            raise ConfigError.of(
                me,
                f"{', '.join(changed)} set with embed_layer={embed!r}, which has no conv stages; "
                f"use embed_layer='conv' or leave {', '.join(conv)} at their defaults",
            )
    for name in ("conv_layers", "conv_channels"):
        if args[name] < 1:
            raise ConfigError.of(me, f"{name}={args[name]} must be >= 1")
    k = args["conv_kernel"]
    if k < 3 or k % 2 == 0:
        raise ConfigError.of(
            me,
            f"conv_kernel={k} must be odd and >= 3 (padding k//2 keeps the grid "
            f"ceil(img_size / stride)); use 3 (CCT's CIFAR models) or 7 (its ImageNet ones)",
        )
    img, patch = _pair(args["img_size"]), _pair(args["patch_size"])
    if embed == "conv":
        grid = ConvTokenizer.feat_size(img, args["conv_layers"], k)
        if min(grid) < MIN_GRID:
            n = args["conv_layers"]
            raise ConfigError.of(
                me,
                f"conv_layers={n} with conv_kernel={k} reduces img_size={args['img_size']} to a "
                f"{grid[0]}x{grid[1]} token grid; use fewer conv_layers or a larger img_size "
                f"(at least {MIN_GRID}x{MIN_GRID} tokens)",
            )
    if embed == "spt" and min(patch) < 2:
        raise ConfigError.of(
            me,
            f"embed_layer='spt' with patch_size={args['patch_size']}: the shift is half a patch, "
            f"0 pixels for a 1-pixel patch; use patch_size >= 2 or embed_layer='patch'",
        )
    if attn == "lsa" and embed != "conv":
        tokens = (img[0] // patch[0]) * (img[1] // patch[1]) + args["class_token"]
        if tokens + args["reg_tokens"] < 2:
            raise ConfigError.of(
                me,
                f"attn_layer='lsa' with one token: masking its own key leaves it nothing to "
                f"attend to; use a smaller patch_size than {args['patch_size']} or class_token=True",
            )


def checkpoint_filter_fn(
    state_dict: Mapping[str, Any],
    model: VisionTransformer,
    interpolation: str = "bicubic",
    antialias: bool = True,
) -> dict[str, torch.Tensor]:
    """Adapt a timm-layout checkpoint to `model`, as timm's function of the same name does for
    this architecture: `model.load_state_dict(checkpoint_filter_fn(sd, model))`.

    Unwraps {'model': sd} (DeiT and MAE releases) and {'state_dict': sd}; resamples pos_embed to
    the model's patch grid (a 224 checkpoint into a 384 model), leaving the prefix tokens' rows
    ([CLS], registers, distillation; none with no_embed_class) alone, and the patch-embedding
    kernel to its patch size (FlexiViT: a /16 checkpoint into a /8 model); drops `pre_logits`.
    Every other key is left alone: drop the head's keys to fine-tune on another number of classes.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"expected a state_dict (a mapping of names to tensors), got {type(state_dict).__name__}"
        )
    state_dict = state_dict.get("model", state_dict)
    state_dict = state_dict.get("state_dict", state_dict)
    out = {}
    patches = type(model.patch_embed) is PatchEmbed  # SPT (a subclass) projects with a Linear
    for k, v in state_dict.items():
        if "patch_embed.proj.weight" in k and patches:
            D, _, h, w = model.patch_embed.proj.weight.shape
            if v.ndim < 4:  # a Linear patch projection, from before patchifying by a conv
                v = v.reshape(D, -1, h, w)
            v = resample_patch_embed(v, (h, w), interpolation, antialias)
        elif (
            k == "pos_embed"
            and model.pos_embed is not None
            and v.shape[1] != model.pos_embed.shape[1]
        ):
            n = 0 if model.no_embed_class else model.num_prefix_tokens
            side = math.isqrt(v.shape[1] - n)
            if side * side != v.shape[1] - n:
                raise ConfigError(
                    f"pos_embed of shape {tuple(v.shape)} after {n} prefix token(s) is not a "
                    f"square grid, so its grid is unknown; resample it with "
                    f"resample_abs_pos_embed(pos_embed, {model.patch_embed.grid_size}, old_size)"
                )
            grid = model.patch_embed.grid_size
            v = resample_abs_pos_embed(v, grid, (side, side), n, interpolation, antialias)
        elif "pre_logits" in k:  # timm drops the representation layer of old 21k checkpoints
            continue
        out[k] = v
    return out


# Named constructors. Keyword arguments override the preset, as with timm.create_model.
def _create(defaults: dict, **kwargs) -> VisionTransformer:
    return VisionTransformer(**{**defaults, **kwargs})


def vit_tiny_patch16_224(**kwargs) -> VisionTransformer:
    """ViT-Ti/16 at 224×224 (5.7M params)."""
    return _create(dict(patch_size=16, embed_dim=192, depth=12, num_heads=3), **kwargs)


def vit_small_patch16_224(**kwargs) -> VisionTransformer:
    """ViT-S/16 at 224×224 (22M params)."""
    return _create(dict(patch_size=16, embed_dim=384, depth=12, num_heads=6), **kwargs)


def vit_base_patch16_224(**kwargs) -> VisionTransformer:
    """ViT-B/16 at 224×224 (86M params)."""
    return _create(dict(patch_size=16, embed_dim=768, depth=12, num_heads=12), **kwargs)


_CIFAR = dict(img_size=32, patch_size=4, num_classes=10)  # 8×8 grid of 4×4 patches = 64 tokens


def vit_tiny_patch4_32(**kwargs) -> VisionTransformer:
    """ViT-Ti width on 32×32 inputs with 4×4 patches (5.4M params), for CIFAR."""
    return _create(dict(**_CIFAR, embed_dim=192, depth=12, num_heads=3), **kwargs)


def vit_small_patch4_32(**kwargs) -> VisionTransformer:
    """ViT-S width on 32×32 inputs with 4×4 patches (21M params), for CIFAR."""
    return _create(dict(**_CIFAR, embed_dim=384, depth=12, num_heads=6), **kwargs)
