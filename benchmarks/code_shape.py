"""The shape of the serving code (`studio/`), at a base revision beside the working tree: per file its lines, its
longest function and how many of its functions are closures; in all, functions over 80 lines and functions with
more than 12 parameters. The numbers docs/ARCHITECTURE.md's table quotes.

    python benchmarks/code_shape.py [--base REV]     (default base: the round's first commit, 36cd5b1)

Results: benchmarks/results/code-shape-*.md.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Report  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LONG, MANY = 80, 12


@dataclass
class FileShape:
    lines: int = 0
    functions: int = 0
    closures: int = 0
    longest: tuple[int, str] = (0, "")
    long: list[str] = field(default_factory=list)  # functions over LONG lines
    many: list[str] = field(default_factory=list)  # functions with over MANY parameters


def shape(text: str) -> FileShape:
    out = FileShape(lines=len(text.splitlines()))

    def visit(node, inside: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = child.end_lineno - child.lineno + 1
                a = child.args
                params = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + bool(a.vararg)
                out.functions += 1
                out.closures += inside
                out.longest = max(out.longest, (length, child.name))
                if length > LONG:
                    out.long.append(f"{child.name} ({length})")
                if params > MANY:
                    out.many.append(f"{child.name} ({params})")
                visit(child, True)
            else:
                visit(child, inside)

    visit(ast.parse(text), False)
    return out


def files_at(rev: str | None) -> dict[str, str]:
    """{path: text} of studio/*.py at `rev` (None: the working tree)."""
    if rev is None:
        return {str(p.relative_to(ROOT)): p.read_text() for p in sorted((ROOT / "studio").rglob("*.py"))}
    names = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, "studio/"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    return {n: subprocess.run(["git", "show", f"{rev}:{n}"], cwd=ROOT, check=True, capture_output=True,
                              text=True).stdout for n in names if n.endswith(".py")}


def totals(shapes: dict[str, FileShape]) -> str:
    functions = sum(s.functions for s in shapes.values())
    closures = sum(s.closures for s in shapes.values())
    long = [f"{n}:{f}" for n, s in shapes.items() for f in s.long]
    many = [f"{n}:{f}" for n, s in shapes.items() for f in s.many]
    return (f"{len(shapes)} files, {sum(s.lines for s in shapes.values())} lines, {functions} functions, "
            f"{closures} closures ({closures / max(functions, 1):.0%}); over {LONG} lines: {len(long)} "
            f"{long}; over {MANY} parameters: {len(many)} {many}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="36cd5b10641bec85d4764dee39d241eca4a3b9ce")
    args = parser.parse_args()
    before = {n: shape(t) for n, t in files_at(args.base).items()}
    after = {n: shape(t) for n, t in files_at(None).items()}
    report = Report("code-shape")
    report.line(f"base {args.base[:7]}: {totals(before)}")
    report.line(f"now:         {totals(after)}")
    report.line("")
    report.line(f"{'file':34} {'lines':>11} {'longest function':>22} {'closures':>10}")
    for name in sorted(set(before) | set(after)):
        b, a = before.get(name), after.get(name)
        cell = lambda s, f: "-" if s is None else f(s)  # noqa: E731
        report.line(f"{name:34} {cell(b, lambda s: s.lines):>5}→{cell(a, lambda s: s.lines):<5} "
                    f"{cell(b, lambda s: s.longest[0]):>10}→{cell(a, lambda s: s.longest[0]):<10} "
                    f"{cell(b, lambda s: s.closures):>4}→{cell(a, lambda s: s.closures):<4}")
    report.save()


if __name__ == "__main__":
    main()
