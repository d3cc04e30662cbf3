"""What the CPU has, printed first by every benchmark, and the defaults chosen by it (issue 37)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from t2i_helpers.models import clip_towers, cpu

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize(
    ("flags", "machine", "system", "fast"),
    [
        ({"sse4_2", "avx"}, "x86_64", "linux", False),  # no AVX2: nothing measured, the towers stay fp32
        ({"avx", "avx2", "fma"}, "x86_64", "linux", True),  # the AMD EPYC of issue 37: 1.54x fp32
        ({"avx2", "avx512f", "avx512_vnni", "amx_int8"}, "x86_64", "linux", True),
        ({"fp", "asimd"}, "aarch64", "linux", False),
        ({"fp", "asimd", "asimddp"}, "aarch64", "linux", True),
        (set(), "arm64", "darwin", True),  # every Apple CPU has the dot-product instructions
    ],
)
def test_int8_is_the_default_only_where_the_cpu_has_fast_int8_products(flags, machine, system, fast):
    assert cpu.int8_fast(frozenset(flags), machine, system) is fast


def test_simd_names_the_flags_that_give_each_extension():
    found = cpu.simd(frozenset({"avx2", "avx512f", "avx_vnni", "avx512_bf16"}))
    assert found == {"AVX2": ["avx2"], "AVX512": ["avx512f"], "VNNI": ["avx_vnni"], "AMX": [], "BF16": ["avx512_bf16"]}


def test_describe_names_this_cpu_and_what_its_flags_say():
    line = cpu.describe()
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), None)
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    assert line.startswith(f"CPU: {model or cpu.cpu_model()} (")
    for name, given in cpu.SIMD.items():
        assert f"{name} {'yes' if flags & set(given) else 'no'}" in line


def test_the_default_encoder_runs_int8_only_where_the_cpu_has_fast_int8(encoder):
    expected = "onnx-int8" if cpu.int8_fast() else "onnx"
    assert (encoder.backend, encoder.text_backend) == (expected, expected)


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_every_benchmark_prints_the_cpu_first(path):
    """The first print of each benchmark's `main` is `describe()`: its figures name the CPU they came from."""
    main = next(n for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef) and n.name == "main")
    calls = [n for n in ast.walk(main) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    first = min((n for n in calls if n.func.id == "print"), key=lambda n: (n.lineno, n.col_offset))
    assert isinstance(first.args[0], ast.Call) and first.args[0].func.id == "describe", path.name


def test_clip_auto_skips_the_onnx_image_tower_only_where_amx_was_measured_to_beat_it():
    skipped = clip_towers.cpu_has_bf16() and bool(cpu.simd()["AMX"])
    assert ("onnx" in clip_towers.candidates("image", torch.device("cpu"))) is not skipped
    assert "onnx" in clip_towers.candidates("text", torch.device("cpu"))
