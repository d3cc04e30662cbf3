"""What this machine's CPU is and has: its model and the SIMD extensions the towers' speed depends on (notebook 02).

The same tower runs at different ratios on different CPUs: the int8 image tower ran 2.16x fp32 on an Intel CPU
with AVX512-VNNI and AMX, 1.54x on an AMD EPYC with AVX2 only; bf16 is native only with AVX512-BF16 or AMX.
So every benchmark prints `describe()` as its first line, and a default that depends on the CPU asks here
(`int8_fast`) or times its candidates (`clip_towers.fastest`), never assumes.

Example:
    >>> describe()
    'CPU: AMD EPYC (2 CPUs); SIMD: AVX2 yes, AVX512 yes, VNNI yes (AVX512-VNNI), AMX no, BF16 yes (AVX512-BF16)'
"""

from __future__ import annotations

import functools
import os
import platform
import sys
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# What is printed, and the flags (as Linux names them) that give each; AVX512 counts its foundation (avx512f).
SIMD = {
    "AVX2": ("avx2",),
    "AVX512": ("avx512f",),
    "VNNI": ("avx512_vnni", "avx_vnni"),  # int8 dot products: the 512-bit or the 256-bit (AVX-VNNI) form
    "AMX": ("amx_int8", "amx_bf16"),
    "BF16": ("avx512_bf16", "amx_bf16"),
}
NAMES = {"avx512_vnni": "AVX512-VNNI", "avx_vnni": "AVX-VNNI", "amx_int8": "AMX-INT8", "amx_bf16": "AMX-BF16"}
NAMES["avx512_bf16"] = "AVX512-BF16"


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none: not Linux)."""
    fields: dict[str, str] = {}
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip() and fields:
            break  # the first processor's block ends
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model() -> str:
    """The CPU's model name, e.g. 'AMD EPYC' or 'Intel(R) Xeon(R) Platinum 8481C'; the architecture if unknown."""
    info = _cpuinfo()
    return info.get("model name") or info.get("Model") or platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (`flags` on x86, `Features` on ARM); empty elsewhere."""
    info = _cpuinfo()
    return frozenset((info.get("flags") or info.get("Features") or "").split())


def simd(flags: frozenset[str] | None = None) -> dict[str, list[str]]:
    """For each of AVX2, AVX512, VNNI, AMX and BF16, the flags of `flags` (this CPU's by default) that give it."""
    flags = cpu_flags() if flags is None else flags
    return {name: [f for f in given if f in flags] for name, given in SIMD.items()}


def int8_fast(flags: frozenset[str] | None = None, machine: str | None = None, system: str | None = None) -> bool:
    """Whether int8 matrix products have a fast kernel here: AVX2 or better on x86 (VNNI and AMX faster still),
    dot-product instructions on ARM (every Apple CPU has them). Measured: int8 towers 1.5x fp32 with AVX2 only,
    2.2x with AVX512-VNNI and AMX; without AVX2 nothing was measured, so the towers stay fp32 there.

    Args:
        flags, machine, system: this CPU's flags, `platform.machine()` and `sys.platform` by default.
    """
    flags = cpu_flags() if flags is None else flags
    machine = (machine or platform.machine()).lower()
    if machine in ("arm64", "aarch64"):
        return "asimddp" in flags or (system or sys.platform) == "darwin"
    return bool({"avx2", "avx512_vnni", "avx_vnni", "amx_int8"} & flags)


def describe() -> str:
    """One line naming the CPU, its logical CPUs and its SIMD extensions; every benchmark prints it first."""
    parts = []
    for name, given in simd().items():
        named = [NAMES[f] for f in given if f in NAMES]
        parts.append(f"{name} {'yes' if given else 'no'}" + (f" ({', '.join(named)})" if named else ""))
    if "asimddp" in cpu_flags():
        parts.append("ARM dot product yes")
    return f"CPU: {cpu_model()} ({os.cpu_count()} CPUs); SIMD: {', '.join(parts)}"
