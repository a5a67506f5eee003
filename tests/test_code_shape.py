"""The serving code keeps the shape docs/ARCHITECTURE.md describes: no function in `studio/` over 80 lines, no
function over 12 parameters except the public API's endpoints (their parameters are the API's named fields), no
positional input slicing by hand-kept offsets, nothing below `studio/tabs/` importing a tab, no `__getattr__`
forwarding on `Services`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from benchmarks.code_shape import LONG, MANY, files_at, shape

ROOT = Path(__file__).resolve().parent.parent
FILES = files_at(None)


def _endpoints(text: str) -> set[str]:
    """Names of the functions decorated with @endpoint(…) in a module."""
    names = set()
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef) and any(
                isinstance(d, ast.Call) and getattr(d.func, "id", "") == "endpoint" for d in node.decorator_list):
            names.add(node.name)
    return names


def test_no_function_in_studio_is_over_80_lines():
    long = {name: s.long for name, s in ((n, shape(t)) for n, t in FILES.items()) if s.long}
    assert not long, f"functions over {LONG} lines: {long}"


def test_only_api_endpoints_take_more_than_12_parameters():
    many = {}
    for name, text in FILES.items():
        allowed = _endpoints(text)
        over = [f for f in shape(text).many if f.split(" (")[0] not in allowed]
        if over:
            many[name] = over
    assert not many, f"functions over {MANY} parameters that are not API endpoints: {many}"


def test_no_positional_input_slicing():
    offsets = re.compile(r"\.COUNT\b|inputs\.index\(|\[None\] \* \d|values\[\d+:|extra_values\[")
    found = {name: offsets.findall(text) for name, text in FILES.items() if offsets.search(text)}
    assert not found, f"inputs sliced by position: {found}"


def test_nothing_below_the_tabs_imports_a_tab():
    upward = re.compile(r"^\s*(from studio\.tabs\b|from studio import tabs\b|import studio\.tabs\b)", re.M)
    below = {n for n in FILES if not n.startswith("studio/tabs/") and n != "studio/app.py"}
    assert not {n for n in below if upward.search(FILES[n])}


def test_services_forwards_nothing_by_magic():
    assert "__getattr__" not in FILES["studio/services.py"]
