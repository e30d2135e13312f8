"""Document-masked attention over packed rows: selectable backends (config value ``train.attention``).

A packed row holds several documents; ``segments[b, t]`` is the document index of token ``t`` of row ``b``
and -1 marks the trailing padding (see :mod:`plmscale.data`).  Every backend computes the same function:
a token attends only to tokens of its own document (and not to later ones for CLM); padding attends only
to padding, so it never influences a real token and its outputs stay finite.

* ``sdpa``   -- the reference: ``torch.nn.functional.scaled_dot_product_attention`` with the dense boolean
  ``(B, 1, T, T)`` mask of :func:`plmscale.data.attention_mask` (HF ``attn_implementation="sdpa"``).
* ``flex``   -- ``torch.nn.attention.flex_attention.flex_attention`` with a document ``BlockMask`` built by
  ``create_block_mask``; compiled with ``torch.compile`` on CUDA (as the PyTorch docs recommend), eager on
  CPU.  torch has no FlexAttention backward on CPU, so ``flex`` trains only on CUDA.
* ``varlen`` -- documents as variable-length sequences, no mask at all: HF's flash-attention kwargs
  ``cu_seq_lens_q/k`` and ``max_length_q/k`` go through the model forward to the attention function; on
  CUDA with fp16/bf16 inputs it calls ``torch.nn.attention.varlen.varlen_attn`` (flash varlen), elsewhere a
  loop of ``scaled_dot_product_attention`` over the documents (never computes cross-document blocks).

``flex`` and ``varlen`` are attention functions registered on import under the names in
:data:`HF_IMPLEMENTATIONS` with HF's ``AttentionInterface.register`` (plus ``AttentionMaskInterface`` so
that HF builds no dense mask for them). ``flex`` has its own name rather than HF's ``"flex_attention"``
because HF's wrapper always ``torch.compile``s the kernel (about 30 s per mask pattern on a CPU here, for a
forward-only path) and so that a CPU backward fails with the fix in the message. Called without this
module's kwargs (a plain unpacked forward, generation, a 2D padding mask) both fall back to HF's SDPA path,
so a model switched to them still computes the right thing. The implementation name is not written to
``config.json`` by ``save_pretrained`` (HF keeps it in a private config attribute), so checkpoints load with
the plain ``AutoModelFor*.from_pretrained`` wherever plmscale is not installed.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
from torch.nn.attention.varlen import varlen_attn
from transformers import AttentionInterface, AttentionMaskInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from plmscale.data import attention_mask

__all__ = [
    "ATTENTION_BACKENDS",
    "HF_IMPLEMENTATIONS",
    "check_backend",
    "document_block_mask",
    "forward_kwargs",
    "hf_attn_implementation",
    "kernel_name",
    "set_backend",
    "varlen_metadata",
]

ATTENTION_BACKENDS: tuple[str, ...] = ("sdpa", "flex", "varlen")
# the attn_implementation each backend gives HF; the last two are registered below
HF_IMPLEMENTATIONS: dict[str, str] = {"sdpa": "sdpa", "flex": "plmscale_flex", "varlen": "plmscale_varlen"}
_HALF_DTYPES = (torch.float16, torch.bfloat16)
_FLEX_CPU_TRAINING = (
    "train.attention='flex' cannot train on {device}: torch {torch} has no FlexAttention backward pass "
    "off CUDA ('FlexAttention does not support backward on CPU'); set train.attention to 'varlen' "
    "(same document masking, per-document SDPA kernel) or 'sdpa' (dense mask) for runs on {device}"
)


def _check_name(backend: str) -> None:
    """ValueError naming the allowed values unless ``backend`` is one of :data:`ATTENTION_BACKENDS`."""
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(
            f"train.attention={backend!r} is not an attention backend; use one of {ATTENTION_BACKENDS} "
            "('sdpa' dense mask, 'flex' FlexAttention BlockMask, 'varlen' variable-length documents)"
        )


def check_backend(backend: str, device: torch.device, *, training: bool) -> None:
    """Fail early, with the setting and the fix, when ``backend`` cannot run on ``device``.

    Raises ValueError for an unknown name; for ``flex`` on a device other than CUDA or CPU
    (``torch.nn.attention.flex_attention`` ships kernels for those two); and for ``flex`` training anywhere
    but CUDA, because torch implements FlexAttention's backward pass only there.  ``sdpa`` and ``varlen``
    run everywhere (``varlen`` falls back to a per-document SDPA loop off CUDA).
    """
    _check_name(backend)
    device = torch.device(device)
    if backend != "flex":
        return
    if device.type not in ("cuda", "cpu"):
        raise ValueError(
            f"train.attention='flex' is not supported on device {device.type!r} (FlexAttention runs on "
            "CUDA and, forward only, on CPU); set train.attention to 'varlen' or 'sdpa'"
        )
    if training and device.type != "cuda":
        raise ValueError(_FLEX_CPU_TRAINING.format(device=device.type, torch=torch.__version__))


def hf_attn_implementation(backend: str) -> str:
    """The ``attn_implementation`` string HF gets for ``backend`` (``config._attn_implementation``)."""
    _check_name(backend)
    return HF_IMPLEMENTATIONS[backend]


def set_backend(model: PreTrainedModel, backend: str) -> None:
    """Switch a built or loaded HF model to ``backend`` in place.

    Uses ``PreTrainedModel.set_attn_implementation`` (transformers v5), which accepts names registered
    with ``AttentionInterface.register`` and updates the configs of all submodels.  Saving needs no
    switch back: ``save_pretrained`` does not write the implementation name to ``config.json``.
    """
    model.set_attn_implementation(hf_attn_implementation(backend))


def document_block_mask(segments: torch.Tensor, causal: bool) -> BlockMask:
    """FlexAttention ``BlockMask`` of the document pattern of ``segments`` (B, T), on ``segments.device``.

    ``mask_mod(b, h, q, kv)`` is ``segments[b, q] == segments[b, kv]`` (and ``q >= kv`` for CLM), the same
    predicate as :func:`plmscale.data.attention_mask`; ``torch.nn.attention.flex_attention.
    create_block_mask`` evaluates it (vmapped, no Python loop) into the block-sparse layout, so blocks
    that lie wholly across documents are skipped by the kernel.
    """
    segments = segments.contiguous()

    def document(b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
        return segments[b, q_idx] == segments[b, kv_idx]

    def causal_document(
        b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor
    ) -> torch.Tensor:
        return (segments[b, q_idx] == segments[b, kv_idx]) & (q_idx >= kv_idx)

    rows, length = segments.shape
    mask_mod = causal_document if causal else document
    return create_block_mask(mask_mod, rows, None, length, length, device=segments.device)


def varlen_metadata(segments: torch.Tensor) -> dict[str, Any]:
    """HF flash-attention kwargs of the documents of ``segments`` (B, T), rows flattened to B*T tokens.

    A document starts at every row start and wherever the segment id changes; the trailing padding of a
    row is one more document (it attends only to itself, as with the dense mask).  ``cu_seq_lens_q/k``
    are int32 cumulative offsets ``[0, ..., B*T]`` (the layout of ``varlen_attn`` and flash-attn);
    ``max_length_q/k`` the longest document as a Python int (one device sync per batch).
    """
    rows, length = segments.shape
    flat = segments.reshape(-1)
    starts = torch.ones_like(flat, dtype=torch.bool)
    starts[1:] = flat[1:] != flat[:-1]
    starts[::length] = True
    total = torch.tensor([rows * length], dtype=torch.int64, device=segments.device)
    cu_seq_lens = torch.cat([torch.nonzero(starts).squeeze(1), total]).to(torch.int32)
    longest = int(cu_seq_lens.diff().max())
    return {
        "cu_seq_lens_q": cu_seq_lens,
        "cu_seq_lens_k": cu_seq_lens,
        "max_length_q": longest,
        "max_length_k": longest,
    }


def forward_kwargs(segments: torch.Tensor, *, causal: bool, backend: str) -> dict[str, Any]:
    """Keyword arguments for ``model(input_ids=..., position_ids=..., **forward_kwargs(...))``.

    ``sdpa``: ``{"attention_mask": dense (B, 1, T, T) bool}``; ``flex``: ``{"attention_mask": BlockMask}``
    (HF's ``masking_utils`` returns any 4D mask, ``BlockMask`` included, unchanged); ``varlen``: the
    :func:`varlen_metadata` kwargs and no mask (causality then comes from the model's ``is_decoder``;
    ``causal`` must match it).  Everything is built on ``segments.device``.
    """
    _check_name(backend)
    if backend == "sdpa":
        return {"attention_mask": attention_mask(segments, causal)}
    if backend == "flex":
        return {"attention_mask": document_block_mask(segments, causal)}
    return varlen_metadata(segments)


def _flash_varlen_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``torch.nn.attention.varlen.varlen_attn`` can run: CUDA and fp16/bf16 (flash kernel)."""
    return device.type == "cuda" and dtype in _HALF_DTYPES


def kernel_name(backend: str, device: torch.device, *, dtype: torch.dtype = torch.float32) -> str:
    """The attention kernel ``backend`` runs on ``device`` for attention inputs of ``dtype``, for the log.

    ``dtype`` is what q/k/v will be (the autocast dtype under ``torch.autocast``, else the parameters').
    """
    _check_name(backend)
    device = torch.device(device)
    if backend == "sdpa":
        return "F.scaled_dot_product_attention with a dense (B,1,T,T) document mask"
    if backend == "flex":
        mode = "torch.compile" if device.type == "cuda" else "eager, forward only"
        return f"flex_attention ({mode}) with a document BlockMask"
    if _flash_varlen_available(device, dtype):
        return "torch.nn.attention.varlen.varlen_attn (flash varlen)"
    return "per-document F.scaled_dot_product_attention loop (varlen fallback)"


def _per_document_sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seq_lens: torch.Tensor, causal: bool, **sdpa: Any
) -> torch.Tensor:
    """Attention of each document alone: ``F.scaled_dot_product_attention`` per ``cu_seq_lens`` slice of
    the (tokens, H, hd) tensors, ``is_causal`` for CLM, no mask.  Differentiable (split/cat)."""
    lengths = cu_seq_lens.diff().tolist()
    outs = [
        F.scaled_dot_product_attention(
            qd.transpose(0, 1), kd.transpose(0, 1), vd.transpose(0, 1), is_causal=causal, **sdpa
        ).transpose(0, 1)
        for qd, kd, vd in zip(q.split(lengths), k.split(lengths), v.split(lengths), strict=True)
    ]
    return torch.cat(outs)


def _flash_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seq_lens: torch.Tensor,
    max_length: int,
    causal: bool,
    scale: float | None,
) -> torch.Tensor:
    """``torch.nn.attention.varlen.varlen_attn`` on (tokens, H, hd) tensors; ``window_size=(-1, 0)`` is
    its causal mode.  The flash kernel wants ``hd % 8 == 0`` (the shapes here have hd = 12 or 20), so q/k/v
    get zero columns, which change neither q.k nor the kept output columns; the scale stays ``hd**-0.5``."""
    head_dim = q.shape[-1]
    scale = head_dim**-0.5 if scale is None else scale
    pad = -head_dim % 8
    if pad:
        q, k, v = (F.pad(x, (0, pad)) for x in (q, k, v))
    window = (-1, 0) if causal else (-1, -1)
    cu, n = cu_seq_lens, max_length
    out = varlen_attn(q, k, v, cu, cu, n, n, scale=scale, window_size=window)
    assert isinstance(out, torch.Tensor)
    return out[..., :head_dim]


def varlen_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    cu_seq_lens_k: torch.Tensor | None = None,
    max_length_q: int | None = None,
    max_length_k: int | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """HF attention function of the ``varlen`` backend (registered with ``AttentionInterface.register``).

    q/k/v come as (B, H, T, hd); the output is (B, T, H, hd) with no attention weights, like HF's
    ``sdpa_attention_forward``.  Without ``cu_seq_lens_q`` (a plain forward) it is HF's SDPA path.
    Self-attention only: k has the documents of q, so ``max_length_k`` is not needed.
    """
    if cu_seq_lens_q is None or cu_seq_lens_k is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal,
            **kwargs,
        )  # fmt: skip
    if attention_mask is not None:
        raise ValueError("varlen attention got both cu_seq_lens and an attention mask; pass only one")
    same_documents = cu_seq_lens_k is cu_seq_lens_q or torch.equal(cu_seq_lens_q, cu_seq_lens_k)
    if key.shape[2] != query.shape[2] or not same_documents:
        raise ValueError("varlen attention supports self-attention only (same documents for q and k)")
    causal = bool(getattr(module, "is_causal", False) if is_causal is None else is_causal)
    rows, heads, length, head_dim = query.shape
    q, k, v = (x.transpose(1, 2).reshape(rows * length, heads, head_dim) for x in (query, key, value))
    if _flash_varlen_available(q.device, q.dtype) and head_dim <= 256:
        if dropout > 0.0:
            raise ValueError("varlen_attn has no attention dropout; set attention_probs_dropout_prob=0")
        max_length = int(max_length_q) if max_length_q is not None else length
        out = _flash_varlen(q, k, v, cu_seq_lens_q.to(torch.int32), max_length, causal, scaling)
    else:
        out = _per_document_sdpa(q, k, v, cu_seq_lens_q, causal, dropout_p=dropout, scale=scaling)
    return out.reshape(rows, length, heads, head_dim), None


@functools.cache
def _compiled_flex_attention() -> Callable[..., torch.Tensor]:
    """``torch.compile(flex_attention)``, built once per process (the PyTorch docs' recommended use)."""
    return torch.compile(flex_attention)


def flex_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | BlockMask | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """HF attention function of the ``flex`` backend (registered with ``AttentionInterface.register``).

    With a ``BlockMask`` it calls ``flex_attention(q, k, v, block_mask=..., scale=...)``: compiled on CUDA
    (unless already inside ``torch.compile``), eager on CPU, where torch has no backward, so a
    differentiable call there raises the ``check_backend`` error.  Otherwise it is HF's SDPA path.
    """
    if not isinstance(attention_mask, BlockMask):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if dropout > 0.0:
        raise ValueError("flex attention here has no attention dropout; set attention_probs_dropout_prob=0")
    if query.device.type != "cuda":
        if torch.is_grad_enabled() and query.requires_grad:
            raise ValueError(_FLEX_CPU_TRAINING.format(device=query.device.type, torch=torch.__version__))
        with warnings.catch_warnings():  # eager on CPU is deliberate (no compile, forward only)
            warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile")
            out = flex_attention(query, key, value, block_mask=attention_mask, scale=scaling)
    else:
        kernel = flex_attention if torch.compiler.is_compiling() else _compiled_flex_attention()
        out = kernel(query, key, value, block_mask=attention_mask, scale=scaling)
    assert isinstance(out, torch.Tensor)
    return out.transpose(1, 2).contiguous(), None


def _mask_for_plain_calls(*args: Any, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> Any:
    """HF mask function of the registered backends: no mask unless the caller gave a 2D padding mask,
    which becomes HF's SDPA mask (``transformers.masking_utils.sdpa_mask``) for the SDPA fallback."""
    if attention_mask is None:
        return None
    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


AttentionInterface.register(HF_IMPLEMENTATIONS["flex"], flex_attention_forward)
AttentionInterface.register(HF_IMPLEMENTATIONS["varlen"], varlen_attention_forward)
AttentionMaskInterface.register(HF_IMPLEMENTATIONS["flex"], _mask_for_plain_calls)
AttentionMaskInterface.register(HF_IMPLEMENTATIONS["varlen"], _mask_for_plain_calls)
