"""The set-up (studio/bootstrap.py): llama.cpp compiled for what this machine's OS allows, kept per CPU,
a failed build that keeps going, and torch from a named index with a fallback to the default one."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from studio import bootstrap


def test_native_build_leaves_amx_out_where_the_os_does_not_grant_it(monkeypatch):
    monkeypatch.setattr(bootstrap, "compiler_accepts", lambda flags: True)
    denied = bootstrap.llama_build(portable=False, amx_ok=False, machine="x86_64")
    assert "-DGGML_AMX_INT8=OFF" in denied["CMAKE_ARGS"]
    assert denied["CXXFLAGS"] == denied["CFLAGS"] == "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    granted = bootstrap.llama_build(portable=False, amx_ok=True, machine="x86_64")
    assert granted == {"CMAKE_ARGS": "-DLLAVA_BUILD=OFF"}
    assert bootstrap.llama_build(portable=False, amx_ok=False, machine="arm64") == {"CMAKE_ARGS": "-DLLAVA_BUILD=OFF"}
    # an old compiler that does not know AMX cannot emit it either: no flags it would reject
    monkeypatch.setattr(bootstrap, "compiler_accepts", lambda flags: False)
    assert "CFLAGS" not in bootstrap.llama_build(portable=False, amx_ok=False, machine="x86_64")


def test_portable_build_selects_the_cpu_variant_at_run_time():
    build = bootstrap.llama_build(portable=True, amx_ok=False, machine="x86_64")
    assert "-DGGML_BACKEND_DL=ON" in build["CMAKE_ARGS"] and "-DGGML_CPU_ALL_VARIANTS=ON" in build["CMAKE_ARGS"]
    assert "-DGGML_NATIVE=OFF" in build["CMAKE_ARGS"] and "CFLAGS" not in build


def test_compiler_check_is_real():
    assert bootstrap.compiler_accepts("-O2") is True
    assert bootstrap.compiler_accepts("-mno-such-flag-anywhere") is False


def test_wheels_are_kept_per_cpu_and_flags(monkeypatch, tmp_path):
    monkeypatch.setenv("GENAI_STUDIO_CACHE", str(tmp_path))
    monkeypatch.delenv("STUDIO_WHEEL_CACHE", raising=False)  # .ci/run sets it
    native = {"CMAKE_ARGS": "-DLLAVA_BUILD=OFF"}
    monkeypatch.setattr(bootstrap, "cpu_flags", lambda: "fpu sse avx2 avx512f amx_tile")
    here = bootstrap.llama_wheel_dir(native)
    monkeypatch.setattr(bootstrap, "cpu_flags", lambda: "fpu sse avx2")
    elsewhere = bootstrap.llama_wheel_dir(native)
    assert here != elsewhere and here.parent == tmp_path / "wheels"
    portable = {"CMAKE_ARGS": "-DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON"}
    assert bootstrap.llama_wheel_dir(portable) == bootstrap.llama_wheel_dir(portable)  # one wheel for any CPU


def test_ci_keeps_its_compiled_engine_apart_from_the_empty_model_cache(monkeypatch, tmp_path):
    """.ci/run empties the model cache but keeps the llama.cpp wheel in STUDIO_WHEEL_CACHE."""
    monkeypatch.setenv("GENAI_STUDIO_CACHE", str(tmp_path / "models"))
    monkeypatch.setenv("STUDIO_WHEEL_CACHE", str(tmp_path / "kept"))
    assert bootstrap.llama_wheel_dir(bootstrap.llama_build()).parent == tmp_path / "kept"


def test_setup_without_a_compiler_keeps_going_with_a_hint(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("GENAI_STUDIO_CACHE", str(tmp_path))
    monkeypatch.delenv("STUDIO_WHEEL_CACHE", raising=False)  # .ci/run sets it

    def no_compiler(cmd, **kwargs):
        raise subprocess.CalledProcessError(1, cmd)

    monkeypatch.setattr(bootstrap, "run", no_compiler)
    assert bootstrap.install_llama(["pip", "install"], tmp_path / "python") is False
    out = capsys.readouterr().out
    assert "llama.cpp could not be built here" in out and "rebuild-llama" in out


def test_x86_builds_are_portable_unless_asked_otherwise(monkeypatch):
    monkeypatch.delenv("STUDIO_LLAMA_PORTABLE", raising=False)
    assert "GGML_CPU_ALL_VARIANTS=ON" in bootstrap.llama_build(machine="x86_64")["CMAKE_ARGS"]
    assert "GGML_CPU_ALL_VARIANTS" not in bootstrap.llama_build(machine="arm64")["CMAKE_ARGS"]
    monkeypatch.setenv("STUDIO_LLAMA_PORTABLE", "0")
    assert "GGML_CPU_ALL_VARIANTS" not in bootstrap.llama_build(machine="x86_64")["CMAKE_ARGS"]


def test_a_built_wheel_is_reused_without_compiling(monkeypatch, tmp_path):
    monkeypatch.setenv("GENAI_STUDIO_CACHE", str(tmp_path))
    monkeypatch.delenv("STUDIO_WHEEL_CACHE", raising=False)  # .ci/run sets it
    wheels = bootstrap.llama_wheel_dir(bootstrap.llama_build())
    wheels.mkdir(parents=True)
    (wheels / "llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl").write_bytes(b"")
    commands = []
    monkeypatch.setattr(bootstrap, "run", lambda cmd, **kwargs: commands.append(cmd))
    assert bootstrap.install_llama(["pip", "install"], tmp_path / "python") is True
    assert not any("wheel" in c for cmd in commands for c in cmd[:4])  # no `pip wheel`: nothing compiled
    assert commands[0][-1].endswith(".whl")
    commands.clear()

    def compile_wheel(cmd, **kwargs):
        commands.append(cmd)
        if "wheel" in cmd:  # `pip wheel … -w DIR`: the freshly built wheel lands in DIR
            out = cmd[cmd.index("-w") + 1]
            (Path(out) / "llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl").write_bytes(b"new")

    monkeypatch.setattr(bootstrap, "run", compile_wheel)
    assert bootstrap.install_llama(["pip", "install"], tmp_path / "python", rebuild=True) is True
    assert any("wheel" in cmd for cmd in commands)
    assert (wheels / "llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl").read_bytes() == b"new"


def test_torch_comes_from_a_named_index_or_falls_back_to_the_default(capsys):
    calls = []

    def unreachable(cmd, **kwargs):
        calls.append(cmd)
        if "--index-url" in cmd:
            raise subprocess.CalledProcessError(1, cmd)

    assert bootstrap.install_torch(["pip", "install"], "torch==2.13.0", "http://127.0.0.1:9/cpu", unreachable) == "default"
    assert calls == [["pip", "install", "--index-url", "http://127.0.0.1:9/cpu", "torch==2.13.0"],
                     ["pip", "install", "torch==2.13.0"]]
    out = capsys.readouterr().out
    assert "could not be reached" in out and "from the default package index" in out
    calls.clear()
    assert bootstrap.install_torch(["pip", "install"], "torch==2.13.0", "http://mirror.invalid/cpu",
                                   lambda cmd, **kwargs: calls.append(cmd)) == "http://mirror.invalid/cpu"
    assert len(calls) == 1 and "from the index http://mirror.invalid/cpu" in capsys.readouterr().out


def test_torch_index_flag_is_taken_out_of_the_studio_arguments(monkeypatch):
    monkeypatch.delenv("STUDIO_TORCH_INDEX", raising=False)
    assert bootstrap._torch_index(["--port", "8000", "--torch-index", "URL"]) == ("URL", ["--port", "8000"])
    monkeypatch.setenv("STUDIO_TORCH_INDEX", "ENV")
    assert bootstrap._torch_index(["--port", "8000"]) == ("ENV", ["--port", "8000"])


@pytest.mark.parametrize("command", ["launch", "test", "rebuild-llama"])
def test_commands_are_known(command, monkeypatch):
    seen = []
    monkeypatch.setattr(bootstrap, "ensure_environment", lambda extras, index="": seen.append(extras) or "/bin/true")
    monkeypatch.setattr(bootstrap, "install_llama", lambda *a, **k: True)
    monkeypatch.setattr(bootstrap.subprocess, "call", lambda *a, **k: 0)
    assert bootstrap.main([command]) == 0 and seen


def test_upscalers_come_with_a_torchvision_that_matches_torch(capsys):
    calls = []
    pip = ["pip", "install"]
    assert bootstrap.install_upscalers(pip, True, "default", calls.append)
    assert calls == [pip + ["torchvision", bootstrap.SPANDREL]]  # beside a GPU/Mac torch from the same index
    calls.clear()
    assert bootstrap.install_upscalers(pip, False, "http://mirror.invalid/cpu", calls.append)
    assert calls == [pip + ["--index-url", "http://mirror.invalid/cpu", bootstrap.CPU_TORCHVISION],
                     pip + [bootstrap.SPANDREL]]
    calls.clear()
    assert not bootstrap.install_upscalers(pip, False, "default", calls.append)  # no CUDA torchvision on CPU torch
    assert calls == [] and "Lanczos and latent upscaling work" in capsys.readouterr().out

    def failing(command):
        raise bootstrap.subprocess.CalledProcessError(1, command)

    assert not bootstrap.install_upscalers(pip, True, "default", failing)
    assert "could not be installed" in capsys.readouterr().out
