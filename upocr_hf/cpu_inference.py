"""The CPU inference fast path of UPOCR's layers: the same function as the layers compute, with faster kernels.

Used by `modeling_upocr` in eval mode with autograd off, when a layer's children are still exactly the model's own
(`fast_path_applies`): oneDNN linears with the GELU fused into them, weights cast, fused and reordered once and kept
between forwards (`InferenceCache`), and under bf16 autocast a window attention computed chunk by chunk of windows
(`chunked_window_attention`). Training, and any layer that was replaced or hooked (PEFT/LoRA, quantised layers,
forward hooks), calls the layers as modules. The float64 parity with the authors' implementation holds on both paths.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _onednn_linear_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


_ONEDNN_LINEAR = _onednn_linear_available()
#: oneDNN's bf16 kernels need AVX-512 (or AMX); elsewhere bf16 linears take autocast's own path
_ONEDNN_BFLOAT16 = _ONEDNN_LINEAR and getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)()


def _onednn_weight_dtype(device: torch.device) -> torch.dtype | None:
    """The weight dtype for which `linear` runs oneDNN on `device` in the current autocast state (`None`: none)."""
    if not (_ONEDNN_LINEAR and device.type == "cpu"):
        return None
    if torch.is_autocast_enabled("cpu"):
        bfloat16 = torch.get_autocast_dtype("cpu") == torch.bfloat16 and _ONEDNN_BFLOAT16
        return torch.bfloat16 if bfloat16 else None
    return torch.float32


def linear(
    hidden_states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool = False
) -> torch.Tensor:
    """`F.linear`, followed by the exact (erf) GELU when `gelu`, for the inference fast path.

    On CPU with float32 weights, or under bf16 autocast with bf16 weights, this runs oneDNN's linear, the kernel
    PyTorch's own compiler uses for CPU inference: it applies the GELU to the GEMM's output while it is in cache,
    and in float32 it is faster than the default BLAS GEMM for this model's narrow layers. Same function and
    dtypes as autocast would give, other kernel; bench/bench_inference.py measures the gain. `weight` may be
    plain or as `inference_linear_weights` prepared it.
    """
    autocast = torch.is_autocast_enabled("cpu")
    onednn_dtype = _onednn_weight_dtype(hidden_states.device)
    if weight.dtype == onednn_dtype and (autocast or hidden_states.dtype == weight.dtype):
        return torch.ops.mkldnn._linear_pointwise(
            hidden_states.to(weight.dtype),
            weight,
            bias,
            "gelu" if gelu else "none",
            [],
            "none" if gelu else "",
        )
    if weight.is_mkldnn:  # an input of another dtype: F.linear's own error, not oneDNN's
        weight = weight.to_dense()
    output = F.linear(hidden_states, weight, bias)
    return F.gelu(output) if gelu else output


def inference_linear_weights(
    weight: torch.Tensor, bias: torch.Tensor | None, derived: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`weight` and `bias` as the fast path keeps them for `linear`: cast as autocast would cast them, and where
    `linear` runs oneDNN and a copy of the weight is kept anyway (autocast's cast, or a weight `derived` from the
    parameters, such as the fused projections), that copy reordered into oneDNN's blocked layout once: each call
    would reorder a plain weight again (3-5 % of these GEMMs' time, measured in float32 and bf16)."""
    kept, bias = to_autocast_dtype(weight, bias)
    if (derived or kept is not weight) and kept.dtype == _onednn_weight_dtype(kept.device):
        kept = torch.ops.mkldnn._reorder_linear_weight(kept)
    return kept, bias


def _has_hooks(module: nn.Module) -> bool:
    hooks = (module._forward_hooks, module._forward_pre_hooks)
    global_hooks = (nn.modules.module._global_forward_hooks, nn.modules.module._global_forward_pre_hooks)
    return any(hooks) or any(global_hooks)


def fast_path_applies(module: nn.Module, *children: tuple[nn.Module, type]) -> bool:
    """Whether `module` may take the inference fast path (fused GEMMs, oneDNN kernels, cached weights) instead of
    calling its children: it is in eval mode, autograd is off, and each child is still exactly the given type with
    no hooks. A child replaced or wrapped (PEFT/LoRA, quantisation, a hook, FSDP on a single layer) makes the
    module call its children, as in training."""
    if module.training or torch.is_grad_enabled():
        return False
    return all(type(child) is kind and not _has_hooks(child) for child, kind in children)


class InferenceCache:
    """One value derived from parameters, kept between fast-path (inference) forwards.

    Never used with autograd on. Recomputed whenever a source tensor is changed in place by a tracked op (an
    optimizer step, `load_state_dict`) or replaced, or the autocast state differs; emptied by `UpocrModel.train()`,
    `eval()` and any `.to()` or cast. A write through `param.data` is not visible to it: call
    `model.clear_inference_caches()` after one (or switch the model to eval mode again).
    """

    def __init__(self) -> None:
        # (key, value, sources' storages): one tuple, swapped whole, so that a reader never sees a key with
        # another key's value; the storages are held so that a freed source's address cannot come back
        self._entry: tuple | None = None

    def clear(self) -> None:
        self._entry = None

    # a copy or a pickle of the model starts with empty caches: they hold oneDNN tensors, which can be neither
    # copied nor serialised, and are recomputed on the copy's first inference forward anyway
    def __deepcopy__(self, memo: dict) -> InferenceCache:
        return InferenceCache()

    def __getstate__(self) -> dict:
        return {"_entry": None}

    def get(self, compute, *sources: torch.Tensor, extra_key: tuple = ()) -> torch.Tensor:
        # inference tensors have no version counter to check
        if torch.is_grad_enabled() or any(source.is_inference() for source in sources):
            return compute()
        device = sources[0].device.type
        key = (
            torch.is_autocast_enabled(device),
            torch.get_autocast_dtype(device),
            *((s.data_ptr(), s._version, s.dtype, s.device) for s in sources),
            *extra_key,
        )
        entry = self._entry
        if entry is None or entry[0] != key:
            entry = (key, compute(), [s.untyped_storage() for s in sources])
            self._entry = entry
        return entry[1]


def to_autocast_dtype(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """`tensors` as autocast would cast them for a GEMM: floating-point ones other than float64 to the autocast
    dtype (all unchanged when autocast is off)."""
    device = next(t for t in tensors if t is not None).device.type
    if not torch.is_autocast_enabled(device):
        return tensors
    dtype = torch.get_autocast_dtype(device)
    eligible = lambda t: t is not None and t.is_floating_point() and t.dtype != torch.float64  # noqa: E731
    return tuple(t.to(dtype) if eligible(t) else t for t in tensors)


def cached_linear(
    cache: InferenceCache, module: nn.Linear, hidden_states: torch.Tensor, gelu: bool = False
) -> torch.Tensor:
    """`module(hidden_states)` (then GELU) on the fast path, with the weights `inference_linear_weights` keeps: cast
    for autocast (and reordered for oneDNN) once, not every forward."""
    sources = [t for t in (module.weight, module.bias) if t is not None]
    weight, bias = cache.get(lambda: inference_linear_weights(module.weight, module.bias), *sources)
    return linear(hidden_states, weight, bias, gelu=gelu)


#: bytes of attention scores computed at a time by `chunked_window_attention`: about one core's L2 cache
ATTENTION_CHUNK_BYTES = 1 << 20


def chunked_window_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scaling: tuple[torch.Tensor, torch.Tensor],
    position_bias: torch.Tensor,
    shift_mask: torch.Tensor | None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """Window attention computed window-chunk by window-chunk (the `"cpu_chunked"` implementation of
    `modeling_upocr.UpocrAttentionInterface`, same arguments and result as the others).

    For bf16 on CPU (the inference fast path under autocast), where SDPA's flash kernel is slow on this many tiny
    matrices: a few windows' scores at a time, sized to stay in cache, start as the bias, take the GEMM's product
    in place (one bf16 rounding of logit plus bias, where a product then an add rounds twice) and are normalised
    there. The scaling writes each window's heads contiguous, as the GEMMs want them, in the same pass.
    bench/bench_inference.py measures it against SDPA. Inference only: no dropout, no autograd.
    """
    if dropout:
        raise ValueError(
            f"cpu_chunked window attention is for inference only: got attention dropout {dropout}"
        )
    query, key = (torch.mul(t, factor, out=t.new_empty(t.shape)) for t, factor in zip((query, key), scaling))
    value = value.contiguous()
    batch_windows, heads, tokens, head_dim = query.shape
    context = query.new_empty(batch_windows, tokens, heads, head_dim)
    # windows that share one shift mask (an image's) are chunked together, so a chunk's masks are one slice
    group = batch_windows if shift_mask is None else shift_mask.shape[0]
    chunk = max(1, min(group, ATTENTION_CHUNK_BYTES // (heads * tokens * tokens * query.element_size())))
    scores = query.new_empty(chunk, heads, tokens, tokens)
    if shift_mask is not None:
        shift_mask = shift_mask.to(query.dtype).unsqueeze(1)
    matrices = lambda t: t.reshape(-1, tokens, t.shape[-1])  # noqa: E731  (windows × heads) batch of matrices
    start = 0
    while start < batch_windows:
        stop = min(start + chunk, (start // group + 1) * group)
        chunk_scores = scores[: stop - start]
        if shift_mask is None:
            chunk_scores.copy_(position_bias)
        else:
            torch.add(position_bias, shift_mask[start % group : (stop - 1) % group + 1], out=chunk_scores)
        flat_scores = chunk_scores.view(-1, tokens, tokens)
        flat_scores.baddbmm_(matrices(query[start:stop]), matrices(key[start:stop]).transpose(1, 2))
        probabilities = torch.softmax(flat_scores, dim=-1)
        context[start:stop] = (
            torch.bmm(probabilities, matrices(value[start:stop]))
            .view(stop - start, heads, tokens, head_dim)
            .transpose(1, 2)
        )
        start = stop
    return context.view(batch_windows, tokens, heads * head_dim)


def inference_attention_implementation(implementation: str, query: torch.Tensor) -> str:
    """The window attention the fast path runs in place of `implementation` for `query`: bf16 on CPU takes
    `"cpu_chunked"` instead of SDPA (float32 keeps SDPA: chunking was no faster there)."""
    cpu_bfloat16 = query.device.type == "cpu" and query.dtype == torch.bfloat16
    return "cpu_chunked" if implementation == "sdpa" and cpu_bfloat16 else implementation
