"""How a CLIP-family tower runs: eager fp32, autocast (bf16 / fp16) or ONNX Runtime, picked by timing (notebook 02).

An encoder hands each of its two towers over as a `Tower`: an fp32 module from input tensors to features, plus
an example input. `select_runners` turns a backend name into one runner per tower:

* "torch": eager PyTorch in fp32, the reference every other backend is tested against;
* "autocast": the tower's weights cast once to bf16 (CPU) or fp16 (CUDA) and run under `torch.autocast`;
  on a CPU with AMX-BF16 the image tower embeds ~3x faster than fp32;
* "onnx": the fp32 tower exported once to ONNX (cached, keyed by the weights) and run by ONNX Runtime (CPU);
  fastest for single text queries here;
* "int8": the ONNX graph with int8 weights (dynamic quantization): smaller, lower fidelity; never picked by "auto";
* "auto": on first use, time this machine's candidates for each tower and remember the fastest.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.metadata
import importlib.util
import inspect
import io
import json
import os
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

import torch

from . import cpu

BACKENDS = ("torch", "autocast", "onnx", "int8")
KINDS = ("image", "text")
_FORMAT = 1  # bump when the export below changes: graphs and timings cached by older code are then ignored
Runner = Callable[..., torch.Tensor]


class Tower(NamedTuple):
    """One tower as the backends see it: an fp32 module, an example input and its ONNX signature."""

    kind: str  # "image" or "text"
    module: torch.nn.Module  # eval mode: input tensors -> features [n, dim]
    example: tuple[torch.Tensor, ...]  # a typical input: a batch of pixels, or one short query
    input_names: tuple[str, ...]
    dynamic_axes: Mapping[str, Mapping[int, str]]  # per input: the axes that vary (batch, query length)


class HFTower(torch.nn.Module):
    """A transformers tower (vision or text model) and its projection, if any: inputs -> features."""

    def __init__(self, tower: torch.nn.Module, projection: torch.nn.Module | None) -> None:
        super().__init__()
        self.tower, self.projection = tower, projection  # SigLIP's projection is a head inside the tower

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        pooled = self.tower(*inputs).pooler_output
        return pooled if self.projection is None else self.projection(pooled)


class OpenCLIPText(torch.nn.Module):
    """open_clip's causal text tower on token ids `[n, length]` of any length up to its context length.

    open_clip's own `encode_text` takes exactly the context length (77). This is the same computation with the
    positional embedding and causal mask cut to `length` (the pooled end token sees only the tokens before it),
    and the attention written out, because ONNX export of `nn.MultiheadAttention` fixes the length.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        text = getattr(model, "text", model)  # CustomTextCLIP keeps its text tower in `.text`, CLIP in itself
        self.token_embedding, self.transformer, self.ln_final = text.token_embedding, text.transformer, text.ln_final
        self.positional_embedding, self.text_projection = text.positional_embedding, text.text_projection
        self.register_buffer("attn_mask", text.attn_mask, persistent=False)
        self.pool_type, self.eos_id = _pooling(text)

    @staticmethod
    def fits(model: torch.nn.Module) -> bool:
        """Whether `model`'s text tower is causal, pools its end token and has the standard blocks written out here."""
        from open_clip.transformer import ResidualAttentionBlock

        text = getattr(model, "text", model)
        pool_type, eos_id = _pooling(text)
        if not hasattr(text, "token_embedding") or getattr(text, "cls_emb", None) is not None:
            return False
        causal = getattr(text, "attn_mask", None) is not None and not getattr(text, "use_pad_mask", False)
        blocks = all(
            type(b) is ResidualAttentionBlock
            and b.attn.batch_first
            and b.attn.in_proj_weight is not None
            and b.attn.bias_k is None
            and not hasattr(b, "ln_1_kv")
            for b in text.transformer.resblocks
        )
        return causal and blocks and (pool_type == "argmax" or (pool_type == "eos" and eos_id is not None))

    def end_positions(self, ids: torch.Tensor) -> torch.Tensor:
        """Where each row's end token is: the highest id (CLIP's BPE), or the first `eos_id`."""
        return (ids.int() if self.pool_type == "argmax" else (ids == self.eos_id).int()).argmax(dim=-1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        length = ids.shape[1]
        cast = self.transformer.get_cast_dtype()
        x = self.token_embedding(ids).to(cast) + self.positional_embedding[:length].to(cast)
        mask = self.attn_mask[:length, :length].to(cast)
        for block in self.transformer.resblocks:
            x = x + block.ls_1(_self_attention(block.attn, block.ln_1(x), mask))
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0]), self.end_positions(ids)]
        if isinstance(self.text_projection, torch.nn.Linear):
            return self.text_projection(x)
        return x if self.text_projection is None else x @ self.text_projection


def _self_attention(attn: torch.nn.MultiheadAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What `attn(x, x, x, attn_mask=mask)` computes for batch-first `x` `[n, length, width]` (eval, no dropout)."""
    qkv = torch.nn.functional.linear(x, attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.unflatten(-1, (3, attn.num_heads, -1)).permute(2, 0, 3, 1, 4)  # 3 x [n, heads, length, dim]
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return attn.out_proj(out.transpose(1, 2).flatten(2))


def _pooling(text: torch.nn.Module) -> tuple[str | None, int | None]:
    """An open_clip text tower's pooling and end token id (CLIP keeps them as text_pool_type / text_eos_id)."""
    pool_type = getattr(text, "text_pool_type", getattr(text, "pool_type", None))
    return pool_type, getattr(text, "text_eos_id", getattr(text, "eos_id", None))


def half_dtype(device: torch.device) -> torch.dtype:
    """The 16-bit float autocast uses on `device`: fp16 on CUDA, bf16 elsewhere."""
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bf16 matmuls natively on this CPU (AVX512-BF16 / AMX); else bf16 is emulated and slow."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class Eager:
    """The tower as it is: eager PyTorch in fp32."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.module(*inputs)


class Autocast:
    """A 16-bit copy of the tower (weights cast once, not on every call) run under `torch.autocast`."""

    def __init__(self, module: torch.nn.Module, device: torch.device) -> None:
        self.device, self.dtype = device, half_dtype(device)
        # deepcopy with a memo: every weight is copied straight into 16 bits, never duplicated in fp32 first
        memo = {id(p): torch.nn.Parameter(p.detach().to(self.dtype), False) for p in module.parameters()}
        memo |= {id(b): b.to(self.dtype) if b.is_floating_point() else b for b in module.buffers()}
        self.module = copy.deepcopy(module, memo)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.dtype):
            return self.module(*inputs).float()


class Onnx:
    """The fp32 tower exported to ONNX once (into `cache_dir`) and run by ONNX Runtime; int8 weights if `int8`."""

    def __init__(self, tower: Tower, cache_dir: Path, int8: bool = False) -> None:
        import onnxruntime

        path = onnx_graph(tower, cache_dir, int8)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = tower.input_names

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        feeds = {name: value.cpu().numpy() for name, value in zip(self.input_names, inputs, strict=True)}
        return torch.from_numpy(self.session.run(None, feeds)[0])


def fingerprint(tower: Tower, weights: bool) -> str:
    """A key for what the tower computes: its code, libraries, parameter names and shapes, and (`weights`) values."""
    digest = hashlib.sha1(f"{_FORMAT}|{tower.kind}|{type(tower.module).__qualname__}".encode())
    for module_type in dict.fromkeys(type(m) for m in tower.module.modules()):
        with contextlib.suppress(OSError, TypeError):  # the code that runs, so an edit never reuses a stale graph
            digest.update(inspect.getsource(module_type.forward).encode())
    for package in ("torch", "transformers", "open_clip_torch", "onnx"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            digest.update(f"{package}={importlib.metadata.version(package)}".encode())
    digest.update(repr([(tuple(x.shape), x.dtype) for x in tower.example]).encode())
    for name, tensor in tower.module.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        if weights:
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:20]


def onnx_graph(tower: Tower, cache_dir: Path, int8: bool = False) -> Path:
    """The tower's ONNX graph in `cache_dir`, exported (and for `int8` quantized) on first use, atomically."""
    path = Path(cache_dir) / f"clip-{tower.kind}-{fingerprint(tower, weights=True)}{'-int8' if int8 else ''}.onnx"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.part")
    try:
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(onnx_graph(tower, cache_dir), partial, weight_type=QuantType.QInt8, per_channel=True)
        else:
            _export(tower, partial)
    except Exception as error:
        partial.unlink(missing_ok=True)
        raise RuntimeError(
            f"the {tower.kind} tower could not be exported to ONNX ({type(error).__name__}: {error}); "
            "use backend 'torch' or 'autocast' for it"
        ) from error
    partial.replace(path)  # atomic: another process never sees half a file
    return path


def _export(tower: Tower, path: Path) -> None:
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused MultiheadAttention kernel has no ONNX form
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                tower.module,
                tower.example,
                str(path),
                input_names=list(tower.input_names),
                output_names=["features"],
                dynamic_axes={**tower.dynamic_axes, "features": {0: "n"}},
                dynamo=False,
            )
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def parse_backend(backend: str) -> dict[str, str]:
    """`"auto"`, one backend for both towers, or one per tower as `"image=autocast,text=onnx"`."""
    names = ("auto", *BACKENDS)
    if "=" not in backend:
        choice = {kind: backend for kind in KINDS}
    else:
        pairs = [part.strip().partition("=") for part in backend.split(",")]
        choice = {"image": "auto", "text": "auto"} | {kind.strip(): name.strip() for kind, _, name in pairs}
    if set(choice) != set(KINDS) or not set(choice.values()) <= set(names):
        raise ValueError(
            f"backend must be one of {names}, or per tower like 'image=autocast,text=onnx', not {backend!r}"
        )
    return choice


def candidates(kind: str, device: torch.device) -> list[str]:
    """The backends "auto" times for a tower on `device`.

    ONNX Runtime runs on the CPU only. Without native bf16 (emulated, slow) autocast is no candidate. Where the
    CPU has AMX, the image tower is left to eager and bf16: an ONNX fp32 graph embedded ViT-B/32 images at 39/s
    on an Intel CPU with AMX against 86/s in bf16 even with weights cast on every call (over 100/s cast once, see
    the README), so it is not exported only to lose; with bf16 from AVX512-BF16 alone, nothing was measured, so
    ONNX is timed against it.
    """
    if device.type != "cpu":
        return ["torch", "autocast"]
    onnx = ["onnx"] if importlib.util.find_spec("onnxruntime") else []
    if not cpu_has_bf16():
        return ["torch", *onnx]
    amx = bool(cpu.simd()["AMX"])
    return ["torch", "autocast"] if kind == "image" and amx else ["torch", "autocast", *onnx]


def build(name: str, tower: Tower, device: torch.device, cache_dir: Path) -> Runner:
    """The runner for one tower and one backend name (not "auto")."""
    if name in ("onnx", "int8") and device.type != "cpu":
        raise ValueError(
            f"backend {name!r} runs on the CPU only (ONNX Runtime's CPU provider); use 'autocast' on {device}"
        )
    if name == "torch":
        return Eager(tower.module)
    if name == "autocast":
        return Autocast(tower.module, device)
    return Onnx(tower, cache_dir, int8=name == "int8")


def time_ms(runners: Mapping[str, Runner], example: tuple[torch.Tensor, ...], rounds: int) -> dict[str, float]:
    """Each runner's fastest call on `example`, in ms, over `rounds` rounds that take turns after a warm-up.

    Taking turns and keeping the fastest makes a burst of other work on a shared CPU slow one sample, not one
    candidate.
    """
    best = dict.fromkeys(runners, float("inf"))
    with torch.inference_mode():
        for runner in runners.values():
            runner(*example)
        for _ in range(rounds):
            for name, runner in runners.items():
                start = time.perf_counter()
                runner(*example)
                best[name] = min(best[name], 1000 * (time.perf_counter() - start))
    return {name: round(ms, 3) for name, ms in best.items()}


def fastest(tower: Tower, device: torch.device, cache_dir: Path) -> tuple[str, Runner | None]:
    """The candidate that ran `tower.example` fastest here, timed once and then read from the cache folder.

    Returns:
        The backend name and its runner (None when the choice was read from the cache and is still to build).
    """
    names = candidates(tower.kind, device)
    key = "|".join(
        [fingerprint(tower, weights=False), str(device), str(torch.get_num_threads()), ",".join(names)]
        + [torch.backends.cpu.get_cpu_capability(), str(cpu_has_bf16()), cpu.describe()]
    )
    path = Path(cache_dir) / "clip-backends.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    if key in known:
        return known[key]["backend"], None
    runners = {}
    for name in names:
        try:
            runners[name] = build(name, tower, device, cache_dir)
        except RuntimeError:  # an export that failed: not a candidate (eager fp32 always builds)
            if name == "torch":
                raise
    timings = time_ms(runners, tuple(x.to(device) for x in tower.example), 7 if tower.kind == "text" else 3)
    best = min(timings, key=timings.get)
    known = json.loads(path.read_text()) if path.exists() else {}  # another process may have added entries
    known[key] = {"backend": best, "ms": timings}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.part")
    partial.write_text(json.dumps(known, indent=1))
    partial.replace(path)
    return best, runners[best]


def select_runners(
    towers: Mapping[str, Tower], backend: str, device: torch.device, cache_dir: Path
) -> dict[str, tuple[str, Runner]]:
    """One `(backend name, runner)` per tower for a backend name (see `parse_backend`)."""
    selected = {}
    for kind, name in parse_backend(backend).items():
        runner = None
        if name == "auto":
            name, runner = fastest(towers[kind], device, cache_dir)
        selected[kind] = (name, runner or build(name, towers[kind], device, cache_dir))
    return selected
