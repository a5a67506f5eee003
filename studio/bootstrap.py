"""Set up a virtual environment and run the studio or its tests — standard library only.

    python3 studio/bootstrap.py launch [studio flags…]   # install, fetch defaults on first use, serve
    python3 studio/bootstrap.py test [pytest args…]      # install with test extras, run the whole suite
    python3 studio/bootstrap.py rebuild-llama            # compile llama.cpp again for this machine

It creates `.venv` beside the repository (reused on later runs), installs a CPU build of torch
where no NVIDIA GPU is visible (the normal build where one is, so CUDA works), then installs this
package in editable mode, then the llama.cpp engine for GGUF text models.

llama.cpp is compiled so that it runs on the CPU it lands on. On x86-64 the build holds every CPU
variant of llama.cpp's CPU backend (dynamic backend loading) and the studio's text worker loads the
best one that this CPU *and operating system* allow: ggml scores variants by CPU flags alone, so the
AMX variant is set aside where the OS does not grant AMX tile state (some VMs advertise AMX without
it, and the first tile instruction kills the process). Elsewhere (Apple silicon, ARM) the build is
native. STUDIO_LLAMA_PORTABLE=0 asks for a native x86-64 build instead (a little quicker to compile),
which leaves AMX out unless the OS grants it. The wheel is kept in the studio's cache under a key made
of the version, the build flags and — for native builds — this CPU's flags, so a wheel built for one
CPU is never installed on another (pip's own wheel cache does not know the CPU). Without a compiler
that step fails and the studio still works, on the transformers engine, with a one-line hint.
Installs are skipped when nothing changed since the last run.

A CPU torch can come from a wheel index you name (PyTorch's install page gives the CPU index):
`--torch-index URL` or STUDIO_TORCH_INDEX. If it cannot be reached, the default index is used, and
the set-up says which one it installed from.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("STUDIO_VENV", ROOT / ".venv"))
CPU_TORCH = "torch==2.13.0"
CPU_TORCHVISION = "torchvision==0.28.0"  # the torchvision built for CPU_TORCH (spandrel needs one)
SPANDREL = "spandrel>=0.4,<0.5"
LLAMA_CPP = ("llama-cpp-python", "0.3.36")


def run(cmd: list[str], **kwargs) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def has_nvidia_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        return subprocess.run([smi, "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ensure_environment(extras: str, torch_index: str = "") -> Path:
    if sys.version_info < (3, 11):
        sys.exit(f"GenAI Studio needs Python 3.11 or newer; this is {sys.version.split()[0]}.")
    python = venv_python()
    if not python.exists():
        print(f"Creating a virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    gpu = has_nvidia_gpu() or sys.platform == "darwin"
    torch_spec = "torch" if gpu else CPU_TORCH
    fingerprint = hashlib.sha256(
        ((ROOT / "pyproject.toml").read_bytes() + f"{extras}|{torch_spec}|{llama_build()}".encode())
    ).hexdigest()
    stamp = VENV / f".studio-installed-{extras or 'base'}"
    if stamp.exists() and stamp.read_text() == fingerprint:
        return python
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
    # torch first and on its own: a bare `torch` dependency could otherwise pull a multi-GB CUDA
    # build onto a machine without a GPU.
    source = install_torch(pip, torch_spec, "" if gpu else torch_index)
    run(pip + ["-e", f"{ROOT}[{extras}]" if extras else str(ROOT)])
    install_upscalers(pip, gpu, source)
    install_llama(pip, python)
    stamp.write_text(fingerprint)
    return python


def install_torch(pip: list[str], spec: str, index: str = "", runner=None) -> str:
    """Install torch, from `index` when one is named and reachable, else from the default index.
    Returns (and prints) where it came from."""
    runner = runner or run
    if index:
        try:
            runner(pip + ["--index-url", index, spec])
            print(f"Installed {spec} from the index {index}", flush=True)
            return index
        except subprocess.CalledProcessError:
            print(f"The torch index {index} could not be reached or has no {spec}; using the default index.",
                  flush=True)
    runner(pip + [spec])
    print(f"Installed {spec} from the default package index", flush=True)
    return "default"


def install_upscalers(pip: list[str], gpu: bool, torch_source: str, runner=None) -> bool:
    """spandrel (upscaler models) with a torchvision built for the torch just installed: from the default
    index beside a GPU/Mac torch, or from the index a CPU torch came from. A CPU torch from the default
    index has no matching torchvision there (its torchvision is a CUDA build, which breaks imports), so
    upscaler models are left out then, with a note; Lanczos and latent upscaling work without them."""
    runner = runner or run
    if gpu:
        wanted = [pip + ["torchvision", SPANDREL]]
    elif torch_source != "default":
        wanted = [pip + ["--index-url", torch_source, CPU_TORCHVISION], pip + [SPANDREL]]
    else:
        print("Upscaler models (spandrel) are not installed: a CPU torch from the default index has no matching "
              "torchvision there. Give --torch-index (PyTorch's CPU index) to get both; Lanczos and latent "
              "upscaling work without them.", flush=True)
        return False
    try:
        for command in wanted:
            runner(command)
    except subprocess.CalledProcessError:
        print("Upscaler models (spandrel) could not be installed; Lanczos and latent upscaling still work.",
              flush=True)
        return False
    return True


# -- llama.cpp, compiled for this machine --------------------------------------------------------

def amx_granted() -> bool:
    """Whether Linux lets this process use AMX tile state (the kernel lists it as supported and
    grants the permission). A copy of pipelines.text_worker.amx_granted: this file imports nothing
    of the studio, which is not installed yet when it runs."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        mask = ctypes.c_uint64(0)
        if libc.syscall(158, 0x1021, ctypes.byref(mask)) != 0 or not mask.value & (1 << 18):
            return False
        return libc.syscall(158, 0x1023, 18) == 0
    except (OSError, AttributeError):
        return False


def cpu_flags() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="ascii", errors="replace"):
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def llama_build(portable: bool | None = None, amx_ok: bool | None = None,
                machine: str | None = None) -> dict[str, str]:
    """The environment for compiling llama.cpp here: CMake flags, and compiler flags that leave AMX out
    where the OS does not grant it (a native build would otherwise use it whenever the CPU has it)."""
    machine = machine or platform.machine()
    if portable is None:
        portable = machine == "x86_64" and os.environ.get("STUDIO_LLAMA_PORTABLE") != "0"
    cmake = ["-DLLAVA_BUILD=OFF"]
    env = {}
    if portable:
        cmake += ["-DGGML_NATIVE=OFF", "-DGGML_BACKEND_DL=ON", "-DGGML_CPU_ALL_VARIANTS=ON"]
    elif machine == "x86_64" and not (amx_granted() if amx_ok is None else amx_ok):
        # -march=native enables AMX whenever the CPU reports it; explicit -mno-* flags win over -march.
        # Compilers too old to know these flags cannot emit AMX at all, so they need none.
        no_amx = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
        cmake += ["-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"]
        if compiler_accepts(no_amx):
            env["CFLAGS"] = env["CXXFLAGS"] = no_amx
    env["CMAKE_ARGS"] = " ".join(cmake)
    return env


def compiler_accepts(flags: str) -> bool:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or "cc"
    try:
        return subprocess.run([compiler, *flags.split(), "-E", "-x", "c", os.devnull], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def llama_wheel_dir(build: dict[str, str]) -> Path:
    """Where the wheel for this version, these flags and this CPU is kept: under the studio's cache, or in
    $STUDIO_WHEEL_CACHE (CI keeps its compiled engine there while the model cache starts empty)."""
    cache = Path(os.environ.get("GENAI_STUDIO_CACHE", Path.home() / ".cache" / "genai-studio"))
    wheels = Path(os.environ["STUDIO_WHEEL_CACHE"]) if os.environ.get("STUDIO_WHEEL_CACHE") else cache / "wheels"
    key = hashlib.sha256("|".join([*LLAMA_CPP, *sorted(f"{k}={v}" for k, v in build.items()), platform.machine(),
                                   "" if "GGML_BACKEND_DL=ON" in build["CMAKE_ARGS"] else cpu_flags()])
                         .encode()).hexdigest()[:16]
    return wheels / f"{LLAMA_CPP[0]}-{LLAMA_CPP[1]}-{key}"


def install_llama(pip: list[str], python: Path, rebuild: bool = False) -> bool:
    """The optional llama.cpp engine; a failed build only costs speed, so it never stops the set-up."""
    build = llama_build()
    wheels = llama_wheel_dir(build)
    found = sorted(wheels.glob("*.whl")) if not rebuild else []
    try:
        if not found:
            print(f"Compiling the llama.cpp engine for this machine ({build['CMAKE_ARGS']}; a few minutes, once)…",
                  flush=True)
            env = {**os.environ, **build}
            env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
            wheels.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=wheels.parent) as tmp:
                run([str(python), "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "--quiet",
                     "--disable-pip-version-check", "-w", tmp, "==".join(LLAMA_CPP)], env=env)
                if wheels.exists():
                    shutil.rmtree(wheels)
                os.replace(tmp, wheels)
                os.makedirs(tmp, exist_ok=True)  # TemporaryDirectory removes it again
            found = sorted(wheels.glob("*.whl"))
        run(pip + ["--force-reinstall", "--no-deps", str(found[-1])])
        run(pip + ["-e", f"{ROOT}[llama]"])
        return True
    except (subprocess.CalledProcessError, IndexError):
        print(LLAMA_HINT, flush=True)
        return False


LLAMA_HINT = ("Note: llama.cpp could not be built here (a C/C++ compiler and CMake are needed), so GGUF text "
              "models run on the slower transformers engine. Install a compiler and run: "
              "python3 studio/bootstrap.py rebuild-llama")


def _torch_index(argv: list[str]) -> tuple[str, list[str]]:
    """`--torch-index URL` (bootstrap's own flag, taken out of the studio's arguments)."""
    index = os.environ.get("STUDIO_TORCH_INDEX", "")
    if "--torch-index" in argv:
        at = argv.index("--torch-index")
        index = argv[at + 1] if at + 1 < len(argv) else ""
        argv = argv[:at] + argv[at + 2:]
    return index, argv


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("launch", "test", "rebuild-llama"):
        print(__doc__)
        return 2
    command = argv[0]
    torch_index, rest = _torch_index(argv[1:])
    if command == "launch":
        python = ensure_environment("train", torch_index)
        return subprocess.call([str(python), "-m", "studio", "launch", *rest], cwd=ROOT)
    if command == "rebuild-llama":
        python = ensure_environment("train", torch_index)
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
        return 0 if install_llama(pip, python, rebuild=True) else 1
    python = ensure_environment("test", torch_index)
    return subprocess.call([str(python), "-m", "pytest", *_workers(rest), *rest], cwd=ROOT)


def _workers(rest: list[str]) -> list[str]:
    """Two test workers where there are two cores (pytest-xdist; tests/conftest.py keeps the files that may not
    share the machine on one worker), unless the arguments choose (`-n 0` for one process)."""
    if any(arg.startswith(("-n", "--numprocesses")) or arg == "no:xdist" for arg in rest) or (os.cpu_count() or 1) < 2:
        return []
    return ["-n", "2"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
