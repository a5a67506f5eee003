"""Image prompts (IP-Adapter): a picture that steers what is drawn, beside the words or instead of them.

An IP-Adapter is a .safetensors file (`image_proj.*` and `ip_adapter.*` weights) with a CLIP image encoder
beside it, as h94/IP-Adapter lays them out: `models/ip-adapter_sd15.safetensors` with `models/image_encoder/`,
`sdxl_models/ip-adapter_sdxl.safetensors` with `sdxl_models/image_encoder/` (the `vit-h` SDXL ones use
`models/image_encoder/`). It is given as that file's path, or as a hub file, `owner/repo/folder/name.safetensors`.

The picture's CLIP embedding is computed here (`IPAdapterWeights.embed`) and handed to diffusers as
`ip_adapter_image_embeds`, one per picture of a batch: so an Explore point can carry it as part of the point, and
a walk between two image prompts mixes their embeddings.

Loading an IP-Adapter changes the shared UNet (its cross-attention processors and an image projection) and its
weight lives on those processors, so requests take turns as with LoRAs (`pipelines.image.Adapters`): the ones
with the same LoRAs, IP-Adapter and weight run together; another set waits for them, then the UNet is switched.
The weights stay in memory once read (switching back costs no disk read).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipelines.checks import check_float, short

DEFAULT_WEIGHT = 0.6  # A1111's and diffusers' examples start near here: the words still count


@dataclass(frozen=True)
class IPAdapterRef:
    """What the shared UNet holds: an IP-Adapter (its location) at a weight."""

    location: str
    weight: float = DEFAULT_WEIGHT

    def __post_init__(self) -> None:
        if not isinstance(self.location, str) or not self.location.strip():
            raise ValueError("ip_adapter: give an IP-Adapter .safetensors file or hub file")
        check_float("ip_adapter weight", self.weight, 0.0, 2.0)


@dataclass(frozen=True)
class ImagePrompt:
    """A request's image prompt.

    adapter: the IP-Adapter (location and weight 0 … 2: how strongly the picture steers; 0.5–0.8 keeps the words).
    image: the picture (PIL), read by the adapter's CLIP image encoder.
    """

    adapter: IPAdapterRef
    image: object = field(compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.adapter, IPAdapterRef):
            raise ValueError("image prompt: adapter must be an IPAdapterRef (file and weight)")
        if self.image is None or not hasattr(self.image, "size"):
            raise ValueError("ip_adapter_image: give the image prompt a picture")

    def a1111(self) -> str:
        """As AUTOMATIC1111's ControlNet extension writes an IP-Adapter unit in a PNG's parameters."""
        name = Path(self.adapter.location).stem
        return f'"Module: ip-adapter_clip, Model: {name}, Weight: {self.adapter.weight:g}, ' \
               'Guidance Start: 0, Guidance End: 1"'

    def record(self) -> dict:
        """What History keeps (the picture itself is not kept)."""
        return {"adapter": self.adapter.location, "weight": self.adapter.weight}


@dataclass
class IPAdapterWeights:
    """An IP-Adapter read once for a model: its state dict, its image encoder on the model's device, and what the
    encoder's output is (`hidden`: the penultimate hidden states, for Plus adapters; else the image embedding)."""

    state_dict: dict
    encoder: object
    processor: object
    hidden: bool
    uncond: torch.Tensor | None = None  # the embedding of "no picture", made on first use

    @torch.inference_mode()
    def embed(self, image) -> torch.Tensor:
        """The picture's embedding on the CPU in float32: [1, D], or [1, T, D] for Plus adapters."""
        pixels = self.processor(images=image.convert("RGB"), return_tensors="pt").pixel_values
        return self._encode(pixels)

    @torch.inference_mode()
    def negative(self) -> torch.Tensor:
        """"No picture", as diffusers makes it: zeros for plain adapters, the encoding of a black picture for Plus."""
        if self.uncond is None:
            size = self.encoder.config.image_size
            self.uncond = self._encode(torch.zeros(1, 3, size, size)) if self.hidden else \
                torch.zeros(1, self.encoder.config.projection_dim)
        return self.uncond

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        encoder = self.encoder
        pixels = pixels.to(encoder.device, encoder.dtype)
        if self.hidden:
            return encoder(pixels, output_hidden_states=True).hidden_states[-2].float().cpu()
        return encoder(pixels).image_embeds.float().cpu()

    def check(self, embedding: torch.Tensor, field_name: str = "image prompt") -> torch.Tensor:
        want = tuple(self.negative().shape[1:])
        if tuple(embedding.shape[-len(want):]) != want:
            raise ValueError(f"{field_name}: this embedding ({tuple(embedding.shape)}) was made by another "
                             f"IP-Adapter's image encoder (this one makes {want}); make it again with this one")
        return embedding.reshape(1, *want)


def _split_hub(location: str) -> tuple[str, str] | None:
    """`owner/repo/folder/name.safetensors` → (repo, path in it); None for a local path."""
    parts = location.split("/")
    if len(parts) < 3 or Path(location).expanduser().exists() or location.startswith((".", "/", "~")):
        return None
    return "/".join(parts[:2]), "/".join(parts[2:])


def _encoder_places(file_folder: str) -> list[str]:
    """Where an adapter's image encoder lies, relative to its repository: beside the file, or (h94's ViT-H SDXL
    adapters) in the `models` folder."""
    beside = f"{file_folder}/image_encoder" if file_folder else "image_encoder"
    return [beside, "models/image_encoder"]


def read_ip_adapter(location: str, model, *, offline: bool = False) -> IPAdapterWeights:
    """Read an IP-Adapter (file and image encoder) for `model` (pipelines.image.ImageModel), once per model;
    refused in words when it is made for another kind of model, or is not an IP-Adapter this studio can run."""
    from safetensors import safe_open
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    from pipelines.memory import DoesNotFit, check_addon_fits, module_bytes
    from pipelines.registry import ModelNotAvailable

    with model.lock:
        if location in model.ip_adapters:
            return model.ip_adapters[location]
        if not hasattr(model.pipe, "load_ip_adapter") or getattr(model.pipe, "unet", None) is None:
            raise ModelNotAvailable(f"{model.name} cannot take an image prompt: IP-Adapters are made for Stable "
                                    "Diffusion 1.x and SDXL models")
        hub = _split_hub(location)
        try:
            if hub:
                from huggingface_hub import hf_hub_download

                file = Path(hf_hub_download(hub[0], hub[1], local_files_only=offline))
                parent = Path(hub[1]).parent.as_posix()
                folder = "" if parent == "." else parent
                roots = [(hub[0], place) for place in _encoder_places(folder)]
            else:
                file = Path(location).expanduser()
                roots = [(str(file.parent / "image_encoder"), None), (str(file.parent.parent / "models" /
                                                                         "image_encoder"), None)]
            if file.suffix != ".safetensors":
                raise ModelNotAvailable(f"IP-Adapter {file.name}: only .safetensors IP-Adapters are loaded "
                                        "(pickles can run code)")
            state = {"image_proj": {}, "ip_adapter": {}}
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for key in f.keys():
                    group, _, rest = key.partition(".")
                    if group in state:
                        state[group][rest] = f.get_tensor(key)
            encoder = _first_encoder(CLIPVisionModelWithProjection, roots, offline, model.placement)
        except ModelNotAvailable:
            raise
        except Exception as exc:  # missing, corrupt, offline: one plain message
            raise ModelNotAvailable(f"could not load the IP-Adapter {short(location)}: {short(str(exc), 300)}") \
                from exc
        _check_fits(state, model, location)
        weights = module_bytes(encoder) + sum(t.numel() * t.element_size() for group in state.values()
                                              for t in group.values())
        try:  # memory plans count it: the encoder and the adapter's layers join the model on the device
            check_addon_fits(model.placement.device, f"the IP-Adapter {short(location)}", weights)
        except DoesNotFit as exc:
            raise ModelNotAvailable(str(exc)) from exc
        encoder = encoder.to(model.placement.device).eval()
        size = encoder.config.image_size
        weights = IPAdapterWeights(state, encoder, CLIPImageProcessor(size=size, crop_size=size),
                                   hidden="proj.weight" not in state["image_proj"])
        model.ip_adapters[location] = weights
        return weights


def _first_encoder(cls, roots: list[tuple[str, str | None]], offline: bool, placement):
    """The adapter's CLIP image encoder, from the first place that has one (on the CPU, in the model's dtype)."""
    errors = []
    for root, subfolder in roots:
        try:
            kwargs = {"subfolder": subfolder} if subfolder else {}
            return cls.from_pretrained(root, local_files_only=offline or subfolder is None, use_safetensors=True,
                                       dtype=placement.dtype, **kwargs)
        except (OSError, ValueError) as exc:
            errors.append(f"{root}{'/' + subfolder if subfolder else ''}: {short(str(exc), 120)}")
    raise OSError("its CLIP image encoder was not found (an image_encoder folder beside the file): "
                  + "; ".join(errors))


def _check_fits(state: dict, model, location: str) -> None:
    from pipelines.registry import ModelNotAvailable

    location = location if _split_hub(location) else Path(location).name  # the file's name says which one

    if not state["image_proj"] or not state["ip_adapter"]:
        raise ModelNotAvailable(f"{short(location)} is not an IP-Adapter (it has no image_proj and ip_adapter "
                                "weights)")
    projection = state["image_proj"]
    if "perceiver_resampler.proj_in.weight" in projection or ("norm.weight" in projection
                                                               and "proj.weight" not in projection):
        raise ModelNotAvailable(f"{short(location)} is a FaceID IP-Adapter: it needs face-analysis weights of its "
                                "own, which this studio does not run; use a plain or Plus IP-Adapter")
    unet = model.pipe.unet
    width = unet.config.cross_attention_dim
    keys = [k for k in state["ip_adapter"] if k.endswith("to_k_ip.weight")]
    reads = {state["ip_adapter"][k].shape[-1] for k in keys}
    crossings = sum(1 for name in unet.attn_processors if not name.endswith("attn1.processor"))
    if reads != {width} or len(keys) != crossings:
        raise ModelNotAvailable(f"the IP-Adapter {short(location)} is made for another kind of model (it reads text "
                                f"width {sorted(reads)} in {len(keys)} layers; {model.name} has {width} in "
                                f"{crossings}): use one trained for {model.name}'s family (SD 1.x, or SDXL)")


def _quiet_encoder_warning(record) -> bool:
    """diffusers warns at every load that no image encoder came with the weights: ours is kept apart on purpose."""
    return not str(record.getMessage()).startswith("image_encoder is not loaded")


def switch_ip_adapter(model, active: IPAdapterRef | None, wanted: IPAdapterRef | None) -> None:
    """Make the shared UNet hold `wanted` (None: no IP-Adapter); called with no request running."""
    import logging

    logger = logging.getLogger("diffusers.loaders.ip_adapter")
    if _quiet_encoder_warning not in logger.filters:
        logger.addFilter(_quiet_encoder_warning)
    pipe = model.pipe
    if active is not None and (wanted is None or wanted.location != active.location):
        pipe.unload_ip_adapter()
    if wanted is None:
        return
    if active is None or wanted.location != active.location:
        from pipelines.image_speed import unfuse_projections

        unfuse_projections(model)  # the adapter's processors read the separate key and value projections
        weights = model.ip_adapters[wanted.location]
        state = {group: dict(values) for group, values in weights.state_dict.items()}
        pipe.load_ip_adapter(state, subfolder="", weight_name="", image_encoder_folder=None)
    pipe.set_ip_adapter_scale(wanted.weight)


def image_prompt_inputs(embedding: torch.Tensor, weights: IPAdapterWeights, guided: bool, device, dtype) -> dict:
    """diffusers' `ip_adapter_image_embeds` for one image prompt ([1, D] or [1, T, D]) that the pipeline repeats
    over the batch: [unconditional, prompted] when guided (classifier-free guidance), as the pipeline splits it."""
    return {"ip_adapter_image_embeds": [_embeds([embedding], weights, guided).to(device, dtype)]}


def per_picture_image_prompts(view, embeddings: list[torch.Tensor], weights: IPAdapterWeights, guided: bool,
                              device, dtype) -> dict:
    """One image prompt per picture of a batch (Explore's points each carry their own). diffusers repeats one
    embedding over its batch, so the request's own pipeline view is given the batch's embeddings in place of
    that repetition (the view is this request's alone; the shared pipeline is untouched)."""
    batch = [_embeds(embeddings, weights, guided).to(device, dtype)]
    view.__dict__["prepare_ip_adapter_image_embeds"] = lambda *args, **kwargs: batch
    return {"ip_adapter_image_embeds": batch}


def _embeds(embeddings: list[torch.Tensor], weights: IPAdapterWeights, guided: bool) -> torch.Tensor:
    positive = torch.stack([weights.check(e) for e in embeddings])  # [n, 1, D] or [n, 1, T, D]
    if guided:
        negative = weights.negative()[None].expand_as(positive)
        positive = torch.cat([negative, positive])
    return positive


def is_guided(pipe, guidance: float) -> bool:
    """Whether the pipeline runs classifier-free guidance at this scale (as diffusers decides it)."""
    unet = pipe.__dict__.get("unet", getattr(pipe, "unet", None))
    return guidance > 1 and getattr(getattr(unet, "config", None), "time_cond_proj_dim", None) is None
