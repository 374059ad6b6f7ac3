"""Attention maps of MiT's spatial-reduction attention, computed only when they are asked for.

The normal forward keeps timm's fused attention (``scaled_dot_product_attention``), which never builds the
attention matrix. :class:`AttentionCapture` registers forward hooks on the chosen blocks' ``Attention``
modules for the duration of a ``with`` only, and recomputes from each module's own input and its own
projections (``q``; ``sr`` + ``norm`` then the key half of ``kv``) what the fused kernel leaves implicit:
``softmax(q k^T / sqrt(d))``. The hook returns nothing, so the model's outputs are unchanged bit for bit.

Keys are spatially reduced (an ``sr`` conv of kernel = stride = 8/4/2/1 per stage), so every map is at key
resolution: ``heads x Hk x Wk`` per query. Stages, blocks and heads are numbered from 1, as people count.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

STAGES = 4
MEAN = "mean"  # --head mean: the average of the heads' maps (still a distribution over keys)
Head = int | str  # 1-based head index, or MEAN


@dataclass(frozen=True, order=True)
class BlockRef:
    """One transformer block: ``stage`` 1-4, ``block`` 1..depth of that stage."""

    stage: int
    block: int

    def __str__(self) -> str:
        return f"stage {self.stage} block {self.block}"


@dataclass(frozen=True)
class AttentionRequest:
    """What an inference engine captures: these blocks' maps; ``queries``: also keep every query vector, so that
    the map of any query can be computed later (a click in the window); without it only the mean is kept."""

    blocks: tuple[BlockRef, ...]
    queries: bool = True


def parse_head(text: str) -> Head:
    """'mean' or a head number (from 1)."""
    t = str(text).strip().lower()
    if t == MEAN:
        return MEAN
    try:
        head = int(t)
    except ValueError:
        raise UserError(f"--head wants a head number (from 1) or 'mean', not '{text}'") from None
    check_request(None, None, head)
    return head


def check_request(stage: int | None, block: int | None, head: Head) -> None:
    """The checks that need no checkpoint: stage 1-4, numbers from 1. A one-line UserError otherwise."""
    if stage is not None and not 1 <= stage <= STAGES:
        raise UserError(f"--stage {stage}: MiT has stages 1-{STAGES}")
    if block is not None and block < 1:
        raise UserError(f"--block {block}: blocks are numbered from 1")
    if head != MEAN and (not isinstance(head, int) or head < 1):
        raise UserError(f"--head {head}: heads are numbered from 1 (or use 'mean')")


def select_blocks(depths: Sequence[int], num_heads: Sequence[int], stage: int | None, block: int | None,
                  head: Head) -> tuple[BlockRef, ...]:
    """The blocks to capture: one stage, or all four (``stage`` None: the 2x2 grid); ``block`` None is each stage's
    last. Checked against the checkpoint's sizes (``meta.depths``, ``meta.num_heads``): a one-line UserError."""
    check_request(stage, block, head)
    stages = [stage] if stage is not None else list(range(1, STAGES + 1))
    refs = []
    for s in stages:
        depth, heads = depths[s - 1], num_heads[s - 1]
        if block is not None and block > depth:
            raise UserError(f"--block {block}: stage {s} of this checkpoint has {depth} block(s) (1-{depth})")
        if head != MEAN and head > heads:
            more = "" if stage is not None else "; in the four-stage grid use a head every stage has, or --stage"
            raise UserError(f"--head {head}: stage {s} has {heads} head(s) (1-{heads}, or mean){more}")
        refs.append(BlockRef(s, block if block is not None else depth))
    return tuple(refs)


@dataclass
class BlockAttention:
    """One block's attention for one frame, all heads. ``received``: each key's attention averaged over every query
    (the attention each location receives); ``q`` (scaled by 1/sqrt(d)) and ``k`` give any query's own map."""

    ref: BlockRef
    query_hw: tuple[int, int]  # the block's token grid (the queries)
    key_hw: tuple[int, int]  # the spatially reduced key grid
    stride: int  # input pixels per query token (4, 8, 16, 32)
    key_cell: int  # input pixels per key cell (stride x sr: 32 in every MiT stage)
    received: torch.Tensor  # heads x Hk x Wk, float32, sums to 1 over keys
    k: torch.Tensor  # heads x Hk*Wk x d, float32
    q: torch.Tensor | None = None  # heads x H*W x d, float32, already scaled; None unless queries were kept

    @property
    def heads(self) -> int:
        return int(self.received.shape[0])

    def query_map(self, token_yx: tuple[int, int]) -> torch.Tensor:
        """heads x Hk x Wk: softmax over the keys of one query token's scores (row, column in ``query_hw``)."""
        if self.q is None:
            raise ValueError("query vectors were not kept (AttentionRequest(queries=False))")
        y, x = token_yx
        h, w = self.query_hw
        if not (0 <= y < h and 0 <= x < w):
            raise ValueError(f"query token {token_yx} outside the {h}x{w} grid")
        scores = torch.einsum("hd,hkd->hk", self.q[:, y * w + x], self.k)
        return scores.softmax(dim=-1).reshape(self.heads, *self.key_hw)


def head_map(maps: torch.Tensor, head: Head) -> torch.Tensor:
    """heads x Hk x Wk -> Hk x Wk: one head (numbered from 1) or the mean of all."""
    if head == MEAN:
        return maps.mean(dim=0)
    if not 1 <= int(head) <= maps.shape[0]:
        raise ValueError(f"head {head} of {maps.shape[0]}")
    return maps[int(head) - 1]


def attention_module(model: nn.Module, ref: BlockRef) -> nn.Module:
    """The timm ``Attention`` of a block, in a SegFormer3D or its folded twin (which keeps the model as ``.model``)."""
    net = model.model if hasattr(model, "model") and hasattr(model.model, "encoder") else model
    return net.encoder.stages[ref.stage - 1].blocks[ref.block - 1].attn


def _queries_keys(attn: nn.Module, x: torch.Tensor, feat_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor,
                                                                                        tuple[int, int]]:
    """(q scaled, k, key grid) in float32 from the module's own weights: q (B,h,N,d), k (B,h,Nk,d).

    The same operations as timm's ``Attention.forward`` up to the attention itself, in float32 whatever autocast
    runs the model in (the maps are for looking at; the model's own numbers are not touched)."""
    f32 = lambda t: None if t is None else t.float()  # noqa: E731
    b, n, c = x.shape
    h, d = attn.num_heads, attn.head_dim
    x = x.float()
    q = F.linear(x, f32(attn.q.weight), f32(attn.q.bias)).reshape(b, n, h, d).permute(0, 2, 1, 3)
    kx, key_hw = x, tuple(feat_hw)
    if attn.sr is not None:  # spatial reduction: conv (kernel = stride = sr), LayerNorm
        grid = x.permute(0, 2, 1).reshape(b, c, *feat_hw)
        if getattr(attn, "pool", None) is not None:  # PVTv2's linear variant (not MiT): pool first
            grid = attn.pool(grid)
        grid = F.conv2d(grid, f32(attn.sr.weight), f32(attn.sr.bias), stride=attn.sr.stride,
                        padding=attn.sr.padding)
        key_hw = tuple(grid.shape[2:])
        kx = grid.reshape(b, c, -1).permute(0, 2, 1)
        kx = F.layer_norm(kx, attn.norm.normalized_shape, f32(attn.norm.weight), f32(attn.norm.bias), attn.norm.eps)
        if getattr(attn, "act", None) is not None:
            kx = attn.act(kx)
    # kv's output is [k | v] (timm reshapes it as B, N, 2, heads, d): the key projection is its first half
    k = F.linear(kx, f32(attn.kv.weight[:c]), f32(attn.kv.bias[:c]) if attn.kv.bias is not None else None)
    k = k.reshape(b, -1, h, d).permute(0, 2, 1, 3)
    return q * attn.scale, k, key_hw  # type: ignore[return-value]


def mean_received(q: torch.Tensor, k: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """(B,h,Nk): the mean over queries of softmax(q k^T); in chunks of queries, so stage 1 of a large input never
    holds its whole N x Nk matrix."""
    total = torch.zeros(q.shape[0], q.shape[1], k.shape[2], dtype=torch.float32, device=q.device)
    for start in range(0, q.shape[2], chunk):
        total += (q[:, :, start:start + chunk] @ k.transpose(-2, -1)).softmax(dim=-1).sum(dim=2)
    return total / q.shape[2]


class AttentionCapture:
    """``with AttentionCapture(model, request) as cap: model(x)`` -> ``cap.frames()``: per frame of the batch, a
    ``{BlockRef: BlockAttention}``. Hooks exist only inside the ``with``; outside it the model is untouched."""

    def __init__(self, model: nn.Module, request: AttentionRequest) -> None:
        self.request = request
        self._modules = {ref: attention_module(model, ref) for ref in request.blocks}
        self._handles: list = []
        self._captured: dict[BlockRef, tuple] = {}

    def __enter__(self) -> "AttentionCapture":
        self._captured.clear()
        for ref, module in self._modules.items():
            self._handles.append(module.register_forward_hook(self._hook(ref)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, ref: BlockRef):
        keep_q = self.request.queries

        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            x, feat_hw = args[0], tuple(int(v) for v in args[1])
            with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
                q, k, key_hw = _queries_keys(module, x, feat_hw)
                received = mean_received(q, k).reshape(q.shape[0], q.shape[1], *key_hw)
            sr = module.sr.stride[0] if module.sr is not None else 1
            stride = 2 ** (ref.stage + 1)  # MiT: patch embedding stride 4, then 2 per stage
            self._captured[ref] = (feat_hw, key_hw, stride, stride * sr, received, k, q if keep_q else None)
            return None  # the output is the module's own, untouched

        return hook

    def frames(self, device: torch.device | str | None = None) -> list[dict[BlockRef, BlockAttention]]:
        """What the last forward inside the ``with`` captured, split per frame (optionally moved to ``device``)."""
        missing = [str(r) for r in self._modules if r not in self._captured]
        if missing:
            raise RuntimeError(f"no attention captured for {', '.join(missing)} (was the model run inside the with?)")
        move = (lambda t: t) if device is None else (lambda t: t.to(device))  # noqa: E731
        batch = next(iter(self._captured.values()))[4].shape[0]
        out: list[dict[BlockRef, BlockAttention]] = [{} for _ in range(batch)]
        for ref, (feat_hw, key_hw, stride, cell, received, k, q) in self._captured.items():
            received, k = move(received), move(k)
            q = move(q) if q is not None else None
            for i in range(batch):
                out[i][ref] = BlockAttention(ref, feat_hw, key_hw, stride, cell, received[i], k[i],
                                             q[i] if q is not None else None)
        return out
