"""Admission: what a request may load, name or render on this studio — the security boundary in front of model
execution (`studio.host.ModelHost` asks it before it opens anything).

It decides, for every path (page, API, MCP, Explore, the compatibility APIs): model names (listed names; for
owners also hub ids and paths inside the model folders), add-on models (ControlNet, IP-Adapter, preprocessors),
server limits on what Explore renders, the text engine, and guests' rules. Who is asking comes from the request's
`Caller` (`studio.caller`), which `studio.boundary` sets around every event; a request with no caller on a studio
that has guests is treated as a guest (fail closed).

Who is who (owners, guests, passwords) and how much work a guest has left are `studio.access.Access`'s; the Caller
spends from that quota. This module says what a caller may ask for.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from pipelines.checks import short
from pipelines.registry import ModelSpec, Registry
from studio.access import AccessDenied
from studio.caller import Caller, current_caller
from studio.config import Settings

MAX_MODEL_NAME = 512
MODEL_FILES = (".safetensors", ".gguf", ".ckpt", ".pt", ".pth", ".bin", ".tar")


@dataclass
class ModelAdmission:
    """The checks a `ModelHost` runs before it loads or renders anything for a request."""

    settings: Settings
    registry: Registry
    loaded_names: Callable[[str], set[str]]  # the names of a modality's models loaded now (guests may use them)
    enforce: bool = True  # False in a Ray replica: its caller, the UI tier's host, admitted the request

    def caller(self) -> Caller:
        """The request's caller; without one, a guest where the studio has guests (fail closed), else the owner."""
        caller = current_caller()
        if caller is not None:
            return caller
        return Caller("anonymous", guest=bool(self.settings.guest_auth) and self.enforce)

    def _guest(self) -> bool:
        return self.enforce and self.caller().guest

    @property
    def model_dirs(self) -> tuple[Path, ...]:
        """The folders an owner's model paths may point into: the settings' `model_dirs`, the home folder,
        the folder the studio runs in, its cache and the temporary folder."""
        extra = tuple(Path(p).expanduser() for p in self.settings.model_dirs)
        return tuple(p.resolve() for p in (*extra, Path.home(), Path.cwd(), Path(self.settings.cache_dir),
                                           Path(tempfile.gettempdir())))

    # -- models ----------------------------------------------------------------------------------------------
    def admit_model(self, modality: str, name: str) -> ModelSpec:
        """The spec for `name` if this caller may use it; a ValueError naming the `model` field (or AccessDenied
        for a guest) otherwise. Nothing is opened before it says yes."""
        text = (name or "").strip() or self.registry.default(modality)
        if len(text) > MAX_MODEL_NAME or any(ord(c) < 32 for c in text):
            raise ValueError(f"model: a model name, hub id or path has at most {MAX_MODEL_NAME} characters and no "
                             f"control characters (got {len(text):,} characters)")
        if not self.enforce:
            return self.registry.lookup(text, modality)
        if self.caller().guest:
            allowed = {self.registry.default(modality)} | self.loaded_names(modality)
            if text not in allowed:
                raise AccessDenied(f"Guests can't switch models: use {self.registry.default(modality)} (or leave the "
                                   "model blank). The studio's owner can load others.")
        if text not in self.registry.all_by_name():
            self._admit_path(text, modality)
        return self.registry.lookup(text, modality)

    def _admit_path(self, text: str, modality: str, field: str = "model") -> None:
        """A path (or what could be one) must lie inside the model folders and be a model folder or file; the
        errors name `field`."""
        try:
            path = Path(text).expanduser()
            exists = path.exists()
        except OSError:
            raise ValueError(f"{field}: {short(text)} is not a usable path or model name") from None
        if not exists and not text.startswith((".", "/", "~", "\\")):
            return  # a hub id (the registry checks its form)
        resolved = path.resolve()
        if not any(resolved == d or d in resolved.parents for d in self.model_dirs):
            folders = ", ".join(map(str, self.model_dirs))
            raise ValueError(f"{field}: {short(text)} is outside the model folders ({folders}); put the model in one "
                             f"of them (or add a folder with model_dirs in the settings file), or choose a listed "
                             f"{modality} model")
        if exists and resolved.is_file() and resolved.suffix.lower() not in MODEL_FILES:
            raise ValueError(f"{field}: {resolved.name} is not a model file (expected {', '.join(MODEL_FILES)}, or a "
                             "model folder)")

    def admit_backend(self, backend: str) -> None:
        """The text engine a request asks for: guests get the owner's setting."""
        if backend not in ("", "auto", self.settings.text_backend) and self._guest():
            raise AccessDenied("Guests can't change the text engine; it is the owner's setting.")

    # -- add-on models ---------------------------------------------------------------------------------------
    def admit_controlnet(self, name: str) -> str:
        """Where a ControlNet a request names lives — a folder inside the model folders, or a hub id — if this
        caller may load one (guests may not: they load no weights of their own). A ValueError names the field."""
        return self._admit_addon(name, "ControlNet", "controlnet model", "lllyasviel/control_v11p_sd15_canny")

    def admit_ip_adapter(self, name: str) -> str:
        """Where an IP-Adapter a request names lives — a .safetensors file inside the model folders (its
        image_encoder folder beside it), or a hub file — if this caller may load one (guests may not)."""
        location = self._admit_addon(name, "IP-Adapter", "ip_adapter", "h94/IP-Adapter/models/ip-adapter_sd15"
                                                                       ".safetensors")
        if not location.endswith(".safetensors"):
            raise ValueError(f"ip_adapter: {short(name)} is not an IP-Adapter .safetensors file")
        return location

    def _admit_addon(self, name: str, kind: str, field: str, example: str) -> str:
        text = (name or "").strip()
        if not text:
            raise ValueError(f"{field}: give a {kind} folder, file or hub id (e.g. {example})")
        if len(text) > MAX_MODEL_NAME or any(ord(c) < 32 for c in text):
            raise ValueError(f"{field}: at most {MAX_MODEL_NAME} characters and no control characters")
        if self._guest():
            raise AccessDenied(f"Guests can't load {kind} models; the studio's owner can.")
        self._admit_path(text, kind, field=field)
        path = Path(text).expanduser()
        if path.exists():
            return str(path.resolve())
        if self.settings.offline:
            raise ValueError(f"{field}: {short(text)} is a model-hub id and the studio is offline: give the "
                             f"downloaded {kind} instead")
        return text

    def admit_estimator(self, kind: str) -> None:
        """A ControlNet preprocessor ("depth", "pose") loads a model of its own: not for guests."""
        if self._guest():
            raise AccessDenied(f"Guests can't use the {kind} preprocessor (it loads a model of its own); the "
                               "studio's owner can.")

    # -- Explore's renders -----------------------------------------------------------------------------------
    def admit_look(self, look):
        """A diffusion look (Explore's render settings) within the server's image limits, its IP-Adapter admitted."""
        guest = self._guest()
        limits = self.settings.guest_limits if guest else self.settings.image_limits
        if guest and look.preview_steps > self.settings.guest_preview_steps:
            raise ValueError(f"preview_steps must be from 1 to {self.settings.guest_preview_steps} for guests, got "
                             f"{look.preview_steps}")
        if look.ip_adapter:
            look = replace(look, ip_adapter=self.admit_ip_adapter(look.ip_adapter))
        for name in ("steps", "preview_steps"):
            value = getattr(look, name)
            if value > limits.max_steps:
                raise ValueError(f"{name} must be from 1 to {limits.max_steps} on this server, got {value}")
        megapixels = look.width * look.height / 1e6
        if megapixels > limits.max_megapixels + 1e-9:
            raise ValueError(f"size: {look.width}×{look.height} is {megapixels:.2f} megapixels; the limit is "
                             f"{limits.max_megapixels:g}. Choose a smaller width or height.")
        return look

    def render_cap(self, kind: str) -> int:
        """Pictures one latent render request may hold: the longest walk the tabs allow (diffusion: 2 × the
        frame limit; GAN and VAE: 10 × it, or a 24 × 24 map)."""
        frames = self.settings.gan_limits.max_frames
        return frames * 2 if kind == "diffusion" else max(frames * 10, 24 * 24)

    def admit_render(self, count: int, *, preview: bool, kind: str = "diffusion", units: float = 0.0) -> None:
        """A latent render of `count` pictures: within the cap; its `units` of work count against a guest's quota
        (slider previews too: they are work)."""
        cap = self.render_cap(kind)
        if not 1 <= count <= cap:
            raise ValueError(f"pictures: one {kind} request renders 1 to {cap:,} pictures, got {count:,}")
        self.caller().spend(units, "this preview" if preview else "this render")
