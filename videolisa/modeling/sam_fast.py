"""Fast path for the stock ``segment_anything`` SAM: fused attention, autocast, batched mask decoding.

The SAM image encoder runs on every frame and dominates inference (ViT-H: 3 TMACs, 6 TFLOPs per 1024x1024
frame). The stock ``segment_anything`` attention materialises the ``[B*heads, N, N]`` score matrix, adds the
decomposed relative-position terms in two more full-size passes and softmaxes a fourth copy. This module
switches a given :class:`~segment_anything.modeling.Sam` instance to a fast path *without forking it*:

* every image-encoder ``Attention`` module gets a subclass whose ``forward`` calls
  :func:`torch.nn.functional.scaled_dot_product_attention` with the decomposed relative-position bias
  (the stock ``add_decomposed_rel_pos`` terms) as the additive attention mask; windowing and
  un-windowing stay the stock ``Block`` code;
* the image encoder runs under ``torch.autocast`` in a reduced precision (bf16 on GPU): linear layers,
  convolutions and attention in bf16, while the weights, the residual stream between blocks, the
  LayerNorms and the softmax statistics stay float32 (autocast's float32 op list, the SDPA kernels'
  float32 accumulators); optionally the encoder body is ``torch.compile``-d;
* the mask decoder runs once per chunk of frames instead of once per frame, by ``torch.func.vmap`` over
  the frame axis of the stock ``MaskDecoder.predict_masks`` (same arithmetic per frame).

The switch is reversible (:func:`disable_fast_sam`) and leaves parameters, buffers and ``state_dict`` keys
untouched: the modules only change class to subclasses of the stock ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, Sam
from segment_anything.modeling.image_encoder import Attention, get_rel_pos

from videolisa.modeling.sam import decode_low_res_logits, prompt_tensors

# Precisions the encoder may autocast to (None: run in the weights' dtype).
AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)


@dataclass
class FastSamConfig:
    """How the fast path runs on one ``Sam`` instance.

    Attributes:
        autocast_dtype: reduced precision for matmuls/convolutions/attention (``torch.bfloat16`` on GPU), or
            None to compute in the weights' dtype.
        compiled: whether the image-encoder body is ``torch.compile``-d.
    """

    autocast_dtype: torch.dtype | None
    compiled: bool


def decomposed_rel_pos_terms(
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two factors of ``segment_anything``'s ``add_decomposed_rel_pos`` (MViTv2 relative positions).

    Args:
        q: ``[B, heads, q_h * q_w, C]`` unscaled queries.
        rel_pos_h / rel_pos_w: ``[2 * size - 1, C]`` relative-position tables of the two axes.
        q_size / k_size: ``(h, w)`` grids of the queries and keys.

    Returns:
        ``bias_h [B, heads, q_h * q_w, k_h]`` and ``bias_w [B, heads, q_h * q_w, k_w]``; the attention bias
        of query ``(i, j)`` and key ``(m, n)`` is ``bias_h[.., (i, j), m] + bias_w[.., (i, j), n]``.
    """
    q_h, q_w = q_size
    k_h, k_w = k_size
    table_h = get_rel_pos(q_h, k_h, rel_pos_h)  # [q_h, k_h, C]
    table_w = get_rel_pos(q_w, k_w, rel_pos_w)  # [q_w, k_w, C]
    batch, heads, _, channels = q.shape
    grid_q = q.reshape(batch, heads, q_h, q_w, channels)
    bias_h = torch.einsum("bnhwc,hkc->bnhwk", grid_q, table_h)
    bias_w = torch.einsum("bnhwc,wkc->bnhwk", grid_q, table_w)
    return bias_h.reshape(batch, heads, q_h * q_w, k_h), bias_w.reshape(batch, heads, q_h * q_w, k_w)


class FusedRelPosAttention(Attention):
    """``segment_anything``'s image-encoder ``Attention`` with a fused attention kernel.

    Same parameters and the same result as the stock module (``softmax(q k^T * scale + rel_pos) v``), but
    the score matrix is never materialised outside the SDPA kernel. The relative-position bias is, in
    blocks of (batch items, queries) of at most :func:`attention_bias_budget` bytes: softmax is per query,
    so blocking is exact, and small blocks are recycled by the allocator instead of faulting in fresh
    pages for a ``[B, heads, N, N]`` tensor (on CPU that alone costs more than the attention arithmetic).
    Instances are made by re-classing stock modules (:func:`enable_fast_sam`), never constructed directly.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, dim]`` tokens (windows or the whole grid) -> ``[B, H, W, dim]``."""
        batch, height, width, _ = x.shape
        qkv = self.qkv(x).reshape(batch, height * width, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B, heads, H*W, head_dim]
        if self.use_rel_pos:
            out = blocked_rel_pos_attention(q, k, v, self.rel_pos_h, self.rel_pos_w, (height, width))
        else:
            out = F.scaled_dot_product_attention(q, k, v)  # default scale head_dim ** -0.5 == self.scale
        out = out.transpose(1, 2).reshape(batch, height, width, -1)
        return self.proj(out)


def attention_bias_budget(device: torch.device) -> int:
    """Bytes of relative-position bias materialised per SDPA call: 1 GiB on GPUs (few, big kernels); 16 MiB
    on CPUs, about half a server CPU's last-level cache (the block is still cached when the SDPA kernel
    reads it, and the allocator recycles it instead of page-faulting a fresh ``[B, heads, N, N]`` tensor)."""
    return 1 << 30 if device.type == "cuda" else 16 << 20


def blocked_rel_pos_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    grid: tuple[int, int],
) -> torch.Tensor:
    """``softmax(q k^T / sqrt(C) + rel_pos_bias) v`` with SDPA, the bias built block by block.

    Args:
        q, k, v: ``[B, heads, N, C]`` with ``N = grid[0] * grid[1]`` (queries and keys on the same grid).
        rel_pos_h / rel_pos_w: the attention module's relative-position tables ``[2 * size - 1, C]``.

    Returns:
        ``[B, heads, N, C]``.
    """
    batch, heads, tokens, _ = q.shape
    bias_h, bias_w = decomposed_rel_pos_terms(q, rel_pos_h, rel_pos_w, grid, grid)

    def attend(items: slice, queries: slice) -> torch.Tensor:
        bias = (bias_h[items, :, queries, :, None] + bias_w[items, :, queries, None, :]).flatten(-2)
        # SDPA's default scale is head_dim ** -0.5, the stock module's ``self.scale``.
        return F.scaled_dot_product_attention(q[items, :, queries], k[items], v[items], attn_mask=bias.to(q.dtype))

    budget = attention_bias_budget(q.device)
    bytes_per_query = heads * tokens * q.element_size()
    items_per_block = max(1, budget // (bytes_per_query * tokens))
    queries_per_block = tokens if items_per_block > 1 else max(1, budget // bytes_per_query)
    blocks = [
        (slice(b0, b0 + items_per_block), slice(q0, q0 + queries_per_block))
        for b0 in range(0, batch, items_per_block)
        for q0 in range(0, tokens, queries_per_block)
    ]
    if len(blocks) == 1:
        return attend(*blocks[0])
    out = torch.empty_like(q)
    for items, queries in blocks:
        out[items, :, queries] = attend(items, queries)
    return out


class FastImageEncoderViT(ImageEncoderViT):
    """``segment_anything``'s ``ImageEncoderViT`` whose forward runs under the fast-path settings
    (autocast, optional compiled body). Made by re-classing a stock encoder, never constructed directly."""

    fast_settings: FastSamConfig
    compiled_forward: Callable[[torch.Tensor], torch.Tensor] | None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` SAM pixels -> ``[B, C, S/16, S/16]`` embeddings in float32 (the weights' dtype)."""
        body = self.compiled_forward or super().forward
        with autocast_for(x.device, self.fast_settings):
            embeddings = body(x)
        return embeddings.to(self.patch_embed.proj.weight.dtype)


@contextlib.contextmanager
def autocast_for(device: torch.device, settings: FastSamConfig | None) -> Iterator[None]:
    """``torch.autocast`` on ``device`` with the settings' dtype; a no-op when it has none."""
    if settings is None or settings.autocast_dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=settings.autocast_dtype):
        yield


def enable_fast_sam(sam: Sam, autocast_dtype: torch.dtype | None = None, compile: bool = False) -> FastSamConfig:
    """Switch ``sam`` (in place) to the fast path; returns its settings. Calling it again updates them.

    Args:
        sam: a stock ``segment_anything`` ``Sam`` (e.g. from :func:`videolisa.modeling.sam.build_sam`).
        autocast_dtype: ``torch.bfloat16`` / ``torch.float16`` to run the image encoder under autocast
            (keep the weights in float32 so that LayerNorms and the residual stream stay float32), or None
            for the weights' dtype.
        compile: ``torch.compile`` the image-encoder body (first call compiles: minutes for ViT-H).
    """
    if autocast_dtype is not None and autocast_dtype not in AUTOCAST_DTYPES:
        raise ValueError(f"autocast_dtype must be None or one of {list(AUTOCAST_DTYPES)}, got {autocast_dtype!r}")
    encoder = sam.image_encoder
    for module in encoder.modules():
        if type(module) is Attention:
            module.__class__ = FusedRelPosAttention
    settings = FastSamConfig(autocast_dtype=autocast_dtype, compiled=compile)
    encoder.__class__ = FastImageEncoderViT
    encoder.fast_settings = settings
    encoder.compiled_forward = torch.compile(super(FastImageEncoderViT, encoder).forward) if compile else None
    return settings


def disable_fast_sam(sam: Sam) -> None:
    """Restore the stock classes of ``sam``'s modules (in place); a no-op if the fast path is off."""
    encoder = sam.image_encoder
    for module in encoder.modules():
        if type(module) is FusedRelPosAttention:
            module.__class__ = Attention
    if type(encoder) is FastImageEncoderViT:
        del encoder.fast_settings, encoder.compiled_forward
        encoder.__class__ = ImageEncoderViT


def fast_sam_settings(sam: Sam) -> FastSamConfig | None:
    """The fast-path settings of ``sam``, or None when it runs the stock path."""
    encoder = sam.image_encoder
    return encoder.fast_settings if isinstance(encoder, FastImageEncoderViT) else None


def configure_fast_sam(sam: Sam, enabled: bool, compute_dtype: torch.dtype) -> None:
    """Predictor switch: SAM's weights stay in float32 (the rest of the model may be bf16) and ``sam`` runs
    either the fast path, under autocast to ``compute_dtype`` when that is bf16/fp16, or the stock modules
    in float32 (what the original's per-frame loop computes; stock ``segment_anything`` cannot decode masks
    with bf16 weights: its positional encoding multiplies a float32 grid by the weights' matrix)."""
    sam.float()
    if not enabled:
        disable_fast_sam(sam)
        return
    enable_fast_sam(sam, autocast_dtype=compute_dtype if compute_dtype in AUTOCAST_DTYPES else None)


def decode_low_res_logits_batched(
    sam: Sam, image_embeddings: torch.Tensor, prompt_embeddings: torch.Tensor
) -> torch.Tensor:
    """:func:`videolisa.modeling.sam.decode_low_res_logits` for all frames at once.

    The stock ``MaskDecoder.predict_masks`` handles one image with many prompts; ``torch.func.vmap`` over
    the frame axis runs it for every frame in one batched call (same per-frame arithmetic, one kernel
    launch per op instead of one per op and frame). No autocast: the decoder costs about 0.06% of the
    ViT-H encoder's FLOPs (3.6 GFLOPs per frame and prompt), so it keeps the weights' precision.

    Args:
        image_embeddings: ``[F, C, h, w]`` SAM image-encoder outputs.
        prompt_embeddings: ``[K, C]`` segmentation prompts.

    Returns:
        ``[F, K, 4h, 4w]`` float32 low-resolution logits of mask token 0.
    """
    sparse, dense = prompt_tensors(sam, prompt_embeddings)
    image_pe = sam.prompt_encoder.get_dense_pe()

    def decode_frame(frame_embedding: torch.Tensor) -> torch.Tensor:  # [C, h, w] -> [K, 4h, 4w]
        masks, _ = sam.mask_decoder.predict_masks(frame_embedding[None], image_pe, sparse, dense)
        return masks[:, 0]

    return torch.func.vmap(decode_frame)(image_embeddings.to(sparse.dtype)).float()


def decode_low_res_logits_auto(
    sam: Sam, image_embeddings: torch.Tensor, prompt_embeddings: torch.Tensor
) -> torch.Tensor:
    """The batched decoder when ``sam`` is on the fast path, else the stock per-frame loop (same shapes as
    :func:`decode_low_res_logits`)."""
    if fast_sam_settings(sam) is None:
        return decode_low_res_logits(sam, image_embeddings, prompt_embeddings)
    return decode_low_res_logits_batched(sam, image_embeddings, prompt_embeddings)
