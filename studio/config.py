"""Settings: defaults, then an optional TOML file, then command-line flags (last wins).

Server-side limits live here so a public demo cannot be asked for 10^9 tokens, whatever the
sliders say. Nothing is read at import time: `load_settings()` is called by the CLI.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from pipelines.checks import short
from pipelines.gan import GANLimits
from pipelines.image import ImageLimits
from pipelines.image_speed import SpeedParams
from pipelines.text import TextLimits
from pipelines.text_llama import BACKENDS as TEXT_BACKENDS


def default_cache_dir() -> Path:
    return Path(os.environ.get("GENAI_STUDIO_CACHE", Path.home() / ".cache" / "genai-studio"))


RAY_TIERS = ("image", "text", "latent")  # model families that can run on Ray Serve (latent: GAN and VAE)
TIER_SIZING = ("min_replicas", "max_replicas", "target_ongoing_requests", "max_ongoing_requests", "replica_cpus",
               "replica_gpus", "upscale_delay_s", "downscale_delay_s")


@dataclass(frozen=True)
class RaySettings:
    """The model tier on Ray Serve (`studio launch --ray`; the `[ray]` table of the settings file)."""

    address: str = ""  # "" = off (models run in the studio's process); "local" = a Ray on this machine; else a cluster
    cpus: int = 0  # a local Ray: the CPUs it may use (0 = all)
    min_replicas: int = 1  # per deployment; autoscaling keeps the count between min and max
    max_replicas: int = 2
    target_ongoing_requests: float = 1.0  # autoscaling adds a replica when each has more than this in flight
    max_ongoing_requests: int = 2  # requests one replica takes at once (the rest wait in Serve's queue)
    replica_cpus: float = 1.0  # CPUs reserved per replica (also its torch threads)
    replica_gpus: float = 0.0  # GPU share per replica: 0.5 = two replicas on one GPU
    upscale_delay_s: float = 2.0
    downscale_delay_s: float = 30.0
    tiers: tuple[str, ...] = RAY_TIERS  # the model families that run on Ray (the rest in the studio)
    # per-family sizing ([ray.text] / [ray.image] tables): (family, ((field, value), …)), over the values above
    tier_sizes: tuple[tuple[str, tuple[tuple[str, object], ...]], ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def runs(self, tier: str) -> bool:
        """Whether `tier`'s models (image, text, latent = GAN and VAE) run on Ray."""
        return self.enabled and tier in self.tiers

    def for_tier(self, tier: str) -> RaySettings:
        """These settings with `tier`'s own sizing applied."""
        return replace(self, tier_sizes=(), **dict(dict(self.tier_sizes).get(tier, ())))

    def validate(self) -> None:
        unknown = sorted(set(self.tiers) - set(RAY_TIERS))
        if unknown or not self.tiers:
            raise ValueError(f"ray tiers must name one or more of {', '.join(RAY_TIERS)}, got {', '.join(unknown) or 'none'}")
        for tier, sizes in self.tier_sizes:
            wrong = sorted(set(dict(sizes)) - set(TIER_SIZING))
            if tier not in RAY_TIERS or wrong:
                raise ValueError(f"[ray.{tier}]: a table per family ({', '.join(RAY_TIERS)}) of "
                                 f"{', '.join(TIER_SIZING)}; got {', '.join(wrong) or tier}")
            self.for_tier(tier).validate()
        if not 0 <= self.cpus <= 4096:
            raise ValueError(f"ray cpus must be from 0 (all) to 4096, got {self.cpus}")
        if not 1 <= self.min_replicas <= self.max_replicas <= 1024:
            raise ValueError(f"ray replicas: need 1 ≤ min_replicas ≤ max_replicas ≤ 1024, got {self.min_replicas} "
                             f"and {self.max_replicas}")
        if not 0 < self.target_ongoing_requests <= 1000:
            raise ValueError(f"ray target_ongoing_requests must be above 0 and at most 1000, got "
                             f"{self.target_ongoing_requests}")
        if not 1 <= self.max_ongoing_requests <= 1000:
            raise ValueError(f"ray max_ongoing_requests must be from 1 to 1000, got {self.max_ongoing_requests}")
        if not 0 < self.replica_cpus <= 512 or not 0 <= self.replica_gpus <= 16:
            raise ValueError(f"ray replica_cpus must be above 0 (up to 512) and replica_gpus from 0 to 16, got "
                             f"{self.replica_cpus} and {self.replica_gpus}")
        if not 0 <= self.upscale_delay_s <= 3600 or not 0 <= self.downscale_delay_s <= 3600:
            raise ValueError("ray upscale_delay_s and downscale_delay_s must be from 0 to 3600 seconds")


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    auth: tuple[tuple[str, str], ...] = ()  # owners: may do everything
    guest_auth: tuple[tuple[str, str], ...] = ()  # guests: generate only, with a quota
    guest_generations_per_hour: float = 30  # units of work a guest may use per rolling hour (studio.access.UNIT)
    # guests' own, lower limits (each at most the owner's): what one request may ask for
    guest_image_limits: ImageLimits = ImageLimits(max_steps=50, max_megapixels=0.6, max_batch_size=4,
                                                  max_batch_count=2, max_image_pixels=4_000_000)
    guest_preview_steps: int = 12  # steps of a guest's slider preview or real-time picture
    guest_job_seconds: float = 300.0  # a guest's request is stopped, with a message, after this long on the model
    max_user_storage_mb: float = 2000.0  # what one guest may keep in History (owners: the total only)
    max_storage_mb: float = 0.0  # what History may hold in all (0 = no cap but the disk's own, see min_free_disk_mb)
    min_free_disk_mb: float = 500.0  # new work is refused, in words, before the disk has less than this free
    waiting_room: int = 16  # image requests let into the fair queue at once (the model lane takes turns per user)
    behind_proxy: bool = False  # --public: served to others through a reverse proxy; a login is required
    max_upload_mb: float = 50.0  # any single upload (images, zips, LoRA files, latents)
    device: str = "auto"
    dtype: str = "auto"
    outputs: Path = Path("outputs")
    cache_dir: Path = field(default_factory=default_cache_dir)
    offline: bool = False
    trust_remote_code: bool = False
    models_per_modality: int = 1
    text_concurrency: int = 1
    queue_size: int = 64
    text_limits: TextLimits = TextLimits()
    gan_limits: GANLimits = GANLimits()
    image_limits: ImageLimits = ImageLimits()
    allow_pickle: bool = False
    insecure_public: bool = False
    text_backend: str = "auto"  # auto | llama.cpp | transformers
    text_backends: tuple[tuple[str, str], ...] = ()  # per-model overrides: (model name, backend)
    text_threads: int = 0  # CPU threads for text generation; 0 = the physical cores
    prompt_cache_entries: int = 4  # evaluated chat prefixes kept per text model (0 = off)
    model_dirs: tuple[str, ...] = ()  # more folders owners' model paths may point into (beside home, cwd, cache)
    ray: RaySettings = RaySettings()
    content_credentials: bool = True  # sign every picture and video with a C2PA manifest (pipelines.provenance)
    watermark: bool = True  # the invisible watermark on pictures of 256×256 pixels and more
    signing_cert: str = ""  # your own PEM certificate chain for Content Credentials ("" = this install's own)
    signing_key: str = ""  # its PEM private key
    compile: bool = False  # torch.compile image models' UNet and VAE decoder (pipelines.image_speed)
    compile_mode: str = "max-autotune-no-cudagraphs"  # a torch.compile mode (image_speed.COMPILE_MODES)
    compile_backend: str = "inductor"  # inductor | eager (eager: dynamo captures graphs, no code generation)
    preview_decoder: str = "auto"  # live previews of SD-family models: auto (TAESD when on disk) | off | a folder
    depth_model: str = ""  # ControlNet's depth preprocessor: "" = depth-anything-v2-small, or a folder / hub id
    pose_model: str = ""  # ControlNet's pose preprocessor: "" = vitpose-base-simple, or a folder / hub id

    @property
    def guest_limits(self) -> ImageLimits:
        """What one guest request may ask for: the guests' own limits, never above the owner's."""
        owner, guest = self.image_limits, self.guest_image_limits
        return replace(guest, **{f.name: min(getattr(guest, f.name), getattr(owner, f.name)) for f in fields(guest)})

    def backend_for(self, model: str) -> str:
        return dict(self.text_backends).get(model, self.text_backend)

    @property
    def logins(self) -> bool:
        return bool(self.auth or self.guest_auth)

    @property
    def public(self) -> bool:
        """Reachable by others: a share link, listening beyond this machine's loopback, or --public (a reverse
        proxy in front)."""
        return self.share or self.behind_proxy or self.host not in ("127.0.0.1", "localhost", "::1")

    def validate(self) -> None:
        if self.public and not self.logins and not self.insecure_public:
            raise ValueError(
                "refusing to start a public studio without a login: with --share or a non-loopback --host anyone "
                "who finds the address can use this machine's compute, read everyone's History and fill the disk. "
                "Add --auth USER:PASS (or a file of them; --guest-auth for guests who may only generate), or pass "
                "--insecure-public if you really mean it."
            )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be from 0 to 65535, got {self.port}")
        if not 0.1 <= self.guest_generations_per_hour <= 100_000:
            raise ValueError(f"guest_generations_per_hour must be from 0.1 to 100,000 units, got "
                             f"{self.guest_generations_per_hour}")
        for name in ("guest_job_seconds", "max_user_storage_mb", "min_free_disk_mb"):
            if not 0 < getattr(self, name) <= 10**9:
                raise ValueError(f"{name} must be above 0, got {getattr(self, name)}")
        if not 0 <= self.max_storage_mb <= 10**9:
            raise ValueError(f"max_storage_mb must be 0 (no cap) or more, got {self.max_storage_mb}")
        if not 1 <= self.guest_preview_steps <= self.image_limits.max_steps:
            raise ValueError(f"guest_preview_steps must be from 1 to {self.image_limits.max_steps}, got "
                             f"{self.guest_preview_steps}")
        if not 0.1 <= self.max_upload_mb <= 10_000:
            raise ValueError(f"max_upload_mb must be from 0.1 to 10,000, got {self.max_upload_mb}")
        for name in ("models_per_modality", "text_concurrency", "queue_size", "waiting_room"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for model, backend in (("text_backend", self.text_backend), *self.text_backends):
            if backend not in TEXT_BACKENDS:
                raise ValueError(f"text backend for {model} must be one of {', '.join(TEXT_BACKENDS)}, got {short(backend)}")
        self.ray.validate()
        if not 0 <= self.text_threads <= 1024:
            raise ValueError(f"text_threads must be from 0 (auto) to 1024, got {self.text_threads}")
        if bool(self.signing_cert) != bool(self.signing_key):
            raise ValueError("signing_cert and signing_key go together: give both files, or neither")
        for name in ("signing_cert", "signing_key"):
            if getattr(self, name) and not Path(getattr(self, name)).expanduser().is_file():
                raise ValueError(f"{name}: no such file {short(getattr(self, name))}")
        SpeedParams(compile_mode=self.compile_mode, compile_backend=self.compile_backend)  # names the bad field
        if self.preview_decoder not in ("auto", "off") and not Path(self.preview_decoder).expanduser().is_dir():
            raise ValueError(f"preview_decoder must be auto, off or a folder holding a TAESD model, got "
                             f"{short(self.preview_decoder)}")
        if not 0 <= self.prompt_cache_entries <= 64:
            raise ValueError(f"prompt_cache_entries must be from 0 to 64, got {self.prompt_cache_entries}")


def parse_auth(values: list[str]) -> tuple[tuple[str, str], ...]:
    """`USER:PASS` pairs; a value naming an existing file reads one `USER:PASS` per line."""
    pairs = []
    for value in values:
        lines = Path(value).read_text().splitlines() if Path(value).is_file() else [value]
        for line in (ln.strip() for ln in lines):
            if not line or line.startswith("#"):
                continue
            user, sep, password = line.partition(":")
            if not sep or not user or not password:
                raise ValueError(f"--auth expects USER:PASS (or a file of such lines), got {short(line)}")
            pairs.append((user, password))
    return tuple(pairs)


def load_settings(config_file: Path | None = None, **overrides) -> Settings:
    """Defaults ← TOML file (flat keys, [limits] [image_limits] [gan_limits] [text_backends] tables) ← non-None
    keyword overrides."""
    settings = Settings()
    if config_file is not None:
        data = tomllib.loads(Path(config_file).read_text())
        limits = data.pop("limits", {})
        gan_limits = data.pop("gan_limits", {})
        ray = data.pop("ray", {})
        image_limits = data.pop("image_limits", {})
        guest_image_limits = data.pop("guest_image_limits", {})
        if "model_dirs" in data:
            data["model_dirs"] = tuple(str(d) for d in data["model_dirs"])
        if "text_backends" in data:
            data["text_backends"] = tuple(sorted(data["text_backends"].items()))
        known = {f.name for f in fields(Settings)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{config_file}: unknown settings {sorted(unknown)}; known: {sorted(known)}")
        if limits:
            data["text_limits"] = replace(settings.text_limits, **limits)
        if image_limits:
            data["image_limits"] = replace(settings.image_limits, **image_limits)
        if guest_image_limits:
            data["guest_image_limits"] = replace(settings.guest_image_limits, **guest_image_limits)
        if gan_limits:
            data["gan_limits"] = replace(settings.gan_limits, **gan_limits)
        if ray:
            sizes = tuple((tier, tuple(sorted(ray.pop(tier).items()))) for tier in RAY_TIERS
                          if isinstance(ray.get(tier), dict))
            unknown_ray = set(ray) - {f.name for f in fields(RaySettings)}
            if unknown_ray:
                raise ValueError(f"{config_file}: unknown [ray] settings {sorted(unknown_ray)}")
            if "tiers" in ray:
                ray["tiers"] = tuple(ray["tiers"])
            data["ray"] = replace(settings.ray, **ray, tier_sizes=sizes)
        settings = replace(settings, **data)
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    settings = replace(settings, outputs=Path(settings.outputs), cache_dir=Path(settings.cache_dir))
    settings.validate()
    return settings
