"""Set up a virtual environment and run the studio or its tests — standard library only.

    python3 studio/bootstrap.py launch [studio flags…]   # install, fetch defaults on first use, serve
    python3 studio/bootstrap.py test [pytest args…]      # install with test extras, run the whole suite

It creates `.venv` beside the repository (reused on later runs), installs a CPU build of torch
where no NVIDIA GPU is visible (the normal build where one is, so CUDA works), then installs this
package in editable mode, then tries the `[llama]` extra (llama.cpp, compiled here: a few minutes once,
cached by pip afterwards). Without a compiler that step fails and the studio still works, on the
transformers engine, with a one-line hint. Installs are skipped when nothing changed since the last run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("STUDIO_VENV", ROOT / ".venv"))
CPU_TORCH = "torch==2.13.0"


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


def ensure_environment(extras: str) -> Path:
    if sys.version_info < (3, 11):
        sys.exit(f"GenAI Studio needs Python 3.11 or newer; this is {sys.version.split()[0]}.")
    python = venv_python()
    if not python.exists():
        print(f"Creating a virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    torch_spec = "torch" if has_nvidia_gpu() or sys.platform == "darwin" else CPU_TORCH
    fingerprint = hashlib.sha256(
        ((ROOT / "pyproject.toml").read_bytes() + f"{extras}|{torch_spec}".encode())
    ).hexdigest()
    stamp = VENV / f".studio-installed-{extras or 'base'}"
    if stamp.exists() and stamp.read_text() == fingerprint:
        return python
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
    # torch first and on its own: a bare `torch` dependency could otherwise pull a multi-GB CUDA
    # build onto a machine without a GPU.
    run(pip + [torch_spec])
    run(pip + ["-e", f"{ROOT}[{extras}]" if extras else str(ROOT)])
    install_llama(pip)
    stamp.write_text(fingerprint)
    return python


def install_llama(pip: list[str]) -> bool:
    """The optional llama.cpp extra; a failed build only costs speed, so it never stops the set-up."""
    env = dict(os.environ)
    env.setdefault("CMAKE_ARGS", "-DLLAVA_BUILD=OFF")  # the multimodal helper library is not used
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    print("Installing the llama.cpp engine for GGUF text models (compiles once, a few minutes)…", flush=True)
    try:
        run(pip + ["-e", f"{ROOT}[llama]"], env=env)
        return True
    except subprocess.CalledProcessError:
        print(LLAMA_HINT, flush=True)
        return False


LLAMA_HINT = ("Note: llama.cpp could not be built here (a C/C++ compiler and CMake are needed), so GGUF text "
              "models run on the slower transformers engine. Install a compiler and run: "
              f"{VENV}/bin/pip install -e '{ROOT}[llama]'")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("launch", "test"):
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "launch":
        python = ensure_environment("train")
        return subprocess.call([str(python), "-m", "studio", "launch", *rest], cwd=ROOT)
    python = ensure_environment("test")
    return subprocess.call([str(python), "-m", "pytest", *rest], cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
