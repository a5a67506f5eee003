"""What every benchmark shares: the machine's facts, and a report that prints and is kept on disk.

    report = Report("text")
    report.line("engine   studio  bare  ratio")
    report.save()          # benchmarks/results/text-YYYYmmdd-HHMMSS.md, with the machine facts on top

README figures quote these files, so a number in the docs traces to the run that produced it.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine_facts() -> dict[str, str]:
    """CPU, cores, memory, accelerator and library versions of the machine running the benchmark."""
    import torch

    facts = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "python": sys.version.split()[0],
             "torch": torch.__version__, "platform": platform.platform()}
    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo", encoding="ascii", errors="replace"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    facts["cpu"] = cpu
    facts["cores usable"] = str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    try:
        for line in open("/proc/meminfo", encoding="ascii"):
            if line.startswith("MemTotal"):
                facts["memory"] = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts["gpu"] = f"{props.name}, {props.total_memory / 2**30:.1f} GiB, compute {props.major}.{props.minor}"
    for name in ("diffusers", "transformers", "gradio", "llama_cpp"):
        try:
            facts[name] = __import__(name).__version__
        except Exception:
            facts[name] = "not installed"
    try:
        facts["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                         cwd=RESULTS.parent, timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return facts


class Report:
    """Lines printed as they come and saved with the machine facts at the end."""

    def __init__(self, name: str, command: str | None = None) -> None:
        self.name = name
        self.command = command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        self.lines: list[str] = []

    def line(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def save(self) -> Path:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{self.name}-{time.strftime('%Y%m%d-%H%M%S')}.md"
        facts = "\n".join(f"- {k}: {v}" for k, v in machine_facts().items())
        path.write_text(f"# {self.name} benchmark\n\n`{self.command}`\n\n{facts}\n\n```\n" + "\n".join(self.lines)
                        + "\n```\n")
        print(f"\nSaved {path.relative_to(RESULTS.parent.parent)}")
        return path
