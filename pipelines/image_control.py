"""ControlNet: a control picture (edges, lines, a sketch, a depth or normal map) steering where things go.

A `ControlUnit` is one ControlNet with its picture, weight and the part of the denoising it acts in; several
run at once (diffusers' MultiControlNetModel). Most preprocessors here need no model weights: canny edges,
line art and scribbles made from any picture, the user's own sketch, or a depth / normal / pose picture used as
it is ("none"). Two read the picture with a model of their own, an optional download from the model hub (on first
use or by `studio fetch`; offline without it, said in words): "depth" (Depth Anything V2 Small, about 100 MB)
and "pose" (ViTPose, about 360 MB: one person's keypoints over the whole picture, drawn as OpenPose draws them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipelines.checks import check_float, check_int, short

PREPROCESSORS = ("canny", "lineart", "scribble", "sketch", "depth", "pose", "none")
ESTIMATORS = {"depth": "depth-anything-v2-small", "pose": "vitpose-base-simple"}  # their models' registry names
MAX_UNITS = 3


@dataclass(frozen=True)
class ControlUnit:
    """One ControlNet in a request.

    model: the ControlNet — a diffusers ControlNetModel folder or a hub id (for SD 1.x or SDXL, matching the
        image model).
    image: the source picture (PIL), read by `preprocessor` at the picture's size.
    preprocessor: one of PREPROCESSORS; "none" takes the picture as the control picture (a depth map, normal map
        or pose picture made elsewhere); "sketch" takes a drawing (dark strokes on a light ground are turned
        into light on dark, as ControlNets are trained).
    weight: 0 to 2, how strongly it steers (ControlNet's conditioning scale).
    start, end: the part of the denoising it acts in, 0 to 1 (start < end).
    low, high: canny's hysteresis thresholds, 1 to 255 (low < high).
    """

    model: str
    image: object = field(compare=False, repr=False)
    preprocessor: str = "canny"
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0
    low: int = 100
    high: int = 200
    estimator: object = field(default=None, compare=False, repr=False)  # a Depth/PoseEstimator, for depth and pose

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError("controlnet model: give a ControlNet folder or hub id")
        if self.preprocessor not in PREPROCESSORS:
            raise ValueError(f"controlnet preprocessor must be one of {', '.join(PREPROCESSORS)}, got "
                             f"{short(self.preprocessor)}")
        if self.image is None or not hasattr(self.image, "size"):
            raise ValueError("controlnet image: give each ControlNet unit a picture")
        check_float("controlnet weight", self.weight, 0.0, 2.0)
        check_float("controlnet start", self.start, 0.0, 1.0)
        check_float("controlnet end", self.end, 0.0, 1.0)
        if self.start >= self.end:
            raise ValueError(f"controlnet start must be before its end (0 to 1), got {self.start} and {self.end}")
        check_int("canny low threshold", self.low, 1, 254)
        check_int("canny high threshold", self.high, 2, 255)
        if self.low >= self.high:
            raise ValueError(f"canny thresholds: low must be below high, got {self.low} and {self.high}")
        if self.preprocessor in ESTIMATORS and not callable(self.estimator):
            raise ValueError(f"controlnet preprocessor {self.preprocessor}: no {self.preprocessor} estimator was "
                             "given to read the picture")

    def a1111(self, name: str) -> str:
        """The unit as AUTOMATIC1111's ControlNet extension writes it in a PNG's parameters."""
        return (f'"Module: {self.preprocessor}, Model: {name}, Weight: {self.weight:g}, '
                f'Guidance Start: {self.start:g}, Guidance End: {self.end:g}"')

    def record(self) -> dict:
        """What History keeps of the unit (the picture itself and the estimator are not kept)."""
        return {"model": self.model, "preprocessor": self.preprocessor, "weight": self.weight, "start": self.start,
                "end": self.end, "low": self.low, "high": self.high}


def control_picture(unit: ControlUnit, width: int, height: int):
    """The control picture the ControlNet reads, at the picture's size: light lines or shapes on black."""
    from PIL import Image

    source = unit.image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    if unit.preprocessor == "none":
        return source
    if unit.preprocessor in ESTIMATORS:
        return unit.estimator(source)
    gray = np.asarray(source.convert("L"), dtype=np.float64)
    if unit.preprocessor == "sketch":
        lines = 255 - gray if gray.mean() > 127 else gray  # strokes light on dark, whichever way it was drawn
    elif unit.preprocessor == "canny":
        lines = canny(gray, unit.low, unit.high) * 255.0
    elif unit.preprocessor == "lineart":
        magnitude, _ = _gradients(_blur(gray))  # soft lines of any strength, scaled to the picture's own
        lines = np.clip(magnitude / (np.percentile(magnitude, 99) + 1e-6), 0, 1) * 255.0
    else:  # scribble: edges thickened into strokes, as a hand would draw them
        edges = canny(gray, unit.low, unit.high)
        radius = max(1, min(width, height) // 128)
        lines = _dilate(edges, radius) * 255.0
    rgb = np.repeat(np.clip(lines, 0, 255).round().astype(np.uint8)[..., None], 3, axis=2)
    return Image.fromarray(rgb)


class DepthEstimator:
    """A monocular depth model (transformers' depth estimation: Depth Anything, DPT) as ControlNet depth
    preprocessors draw it: near is light, far is dark, stretched to the picture's own range, at the picture's
    size. Thread-safe: each call is its own forward pass."""

    def __init__(self, model, processor) -> None:
        self.model, self.processor = model, processor

    def __call__(self, picture):
        import torch
        from PIL import Image

        inputs = self.processor(images=picture.convert("RGB"), return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.model.device, self.model.dtype)
        with torch.inference_mode():
            depth = self.model(pixel_values=pixels).predicted_depth.float()  # [1, h, w], larger = nearer
            depth = torch.nn.functional.interpolate(depth[None], size=picture.size[::-1], mode="bicubic",
                                                    align_corners=False)[0, 0].cpu()
        low, span = depth.min(), depth.max() - depth.min()
        gray = ((depth - low) / (span if span > 0 else 1) * 255).clamp(0, 255).round().to(torch.uint8).numpy()
        return Image.fromarray(np.repeat(gray[..., None], 3, axis=2))


# OpenPose's body: its 18 points from COCO's 17 (the neck is between the shoulders), the limbs it draws, and
# its colours, as ControlNet's openpose annotator draws them
OPENPOSE_FROM_COCO = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
OPENPOSE_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
                  (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
OPENPOSE_COLOURS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
                    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
                    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))


class PoseEstimator:
    """A top-down keypoint model (transformers' ViTPose, COCO's 17 keypoints) read over the whole picture as one
    person's box, drawn as OpenPose's skeleton on black at the picture's size. Thread-safe."""

    def __init__(self, model, processor, threshold: float = 0.3) -> None:
        import torch

        self.model, self.threshold = model, threshold
        self.size = tuple(model.config.backbone_config.image_size)  # (height, width)
        self.mean, self.std = (torch.tensor(list(v), dtype=torch.float32) for v in (processor.image_mean,
                                                                                    processor.image_std))

    def keypoints(self, picture) -> list[tuple[float, float] | None]:
        """OpenPose's 18 body points in the picture's pixels (None: not found)."""
        import torch
        from PIL import Image

        (height, width), (w, h) = self.size, picture.size
        scale = min(width / w, height / h)
        fit = (max(1, round(w * scale)), max(1, round(h * scale)))
        left, top = (width - fit[0]) // 2, (height - fit[1]) // 2
        canvas = Image.new("RGB", (width, height))
        canvas.paste(picture.convert("RGB").resize(fit, Image.Resampling.BILINEAR), (left, top))
        pixels = (torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255) - self.mean) / self.std
        with torch.inference_mode():
            heat = self.model(pixel_values=pixels.permute(2, 0, 1)[None].to(self.model.device, self.model.dtype)
                              ).heatmaps[0].float().cpu()  # [17, h', w']
        score, index = heat.flatten(1).max(1)
        rows, cols = heat.shape[1:]
        xs = ((index % cols).float() + 0.5) * width / cols
        ys = ((index // cols).float() + 0.5) * height / rows
        coco = [((float(x) - left) / scale, (float(y) - top) / scale) if float(s) > self.threshold else None
                for x, y, s in zip(xs, ys, score)]
        shoulders = (coco[5], coco[6])
        neck = None if None in shoulders else ((shoulders[0][0] + shoulders[1][0]) / 2,
                                               (shoulders[0][1] + shoulders[1][1]) / 2)
        return [neck if i is None else coco[i] for i in OPENPOSE_FROM_COCO]

    def __call__(self, picture):
        from PIL import Image, ImageDraw

        points = self.keypoints(picture)
        drawing = Image.new("RGB", picture.size)
        draw = ImageDraw.Draw(drawing)
        width = max(2, round(min(picture.size) / 128))
        for i, (a, b) in enumerate(OPENPOSE_LIMBS):
            if points[a] is not None and points[b] is not None:
                draw.line([points[a], points[b]], fill=tuple(int(c * 0.6) for c in OPENPOSE_COLOURS[i]), width=width)
        for point, colour in zip(points, OPENPOSE_COLOURS):
            if point is not None:
                x, y = point
                draw.ellipse([x - width, y - width, x + width, y + width], fill=colour)
        return drawing


def load_estimator(kind: str, location: str, placement, *, offline: bool = False):
    """The `kind` ("depth" or "pose") preprocessor's model at `location` (a folder, or a hub id in the hub's cache;
    downloaded when online)."""
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation, VitPoseForPoseEstimation

    from pipelines.registry import ModelNotAvailable

    try:
        local = offline or _is_folder(location)
        processor = AutoImageProcessor.from_pretrained(location, local_files_only=local, use_fast=False)
        loader = AutoModelForDepthEstimation if kind == "depth" else VitPoseForPoseEstimation
        model = loader.from_pretrained(location, local_files_only=local, use_safetensors=True, dtype=placement.dtype)
    except Exception as exc:  # missing, offline, corrupt: one plain message
        what = {"depth": "Depth Anything V2 Small (about 100 MB)", "pose": "ViTPose (about 360 MB)"}[kind]
        hint = (f" The {kind} preprocessor needs {what} from the model hub: start the studio online once, or run "
                f"`studio fetch {ESTIMATORS[kind]}`; or make the {kind} picture elsewhere and give it with \"none\".") \
            if offline or not _is_folder(location) else ""
        raise ModelNotAvailable(f"could not load the {kind} estimator {short(location)}: {short(str(exc), 200)}."
                                f"{hint}") from exc
    model = model.to(placement.device).eval()
    return DepthEstimator(model, processor) if kind == "depth" else PoseEstimator(model, processor)


def canny(gray: np.ndarray, low: float, high: float) -> np.ndarray:
    """Canny edges of a grayscale picture (0–255) as 0/1, as OpenCV's `Canny(picture, low, high)` (which
    ControlNet's canny annotator calls) makes them: 3×3 Sobel gradients with the L1 magnitude, thinning to one
    pixel along the gradient, then hysteresis (weak edges kept where they touch strong ones)."""
    magnitude, angle = _gradients(gray)
    thin = _non_maximum(magnitude, angle)
    strong = thin >= high
    weak = (thin >= low) & ~strong
    edges = strong.copy()
    for _ in range(gray.shape[0] + gray.shape[1]):  # grow strong edges along weak ones until nothing changes
        grown = edges | (_dilate(edges, 1) & weak)
        if np.array_equal(grown, edges):
            break
        edges = grown
    return edges.astype(np.float64)


def _blur(gray: np.ndarray, sigma: float = 1.4) -> np.ndarray:
    radius = int(3 * sigma)
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-(x ** 2) / (2 * sigma ** 2))
    kernel /= kernel.sum()
    padded = np.pad(gray, radius, mode="edge")
    rows = sum(k * padded[:, i:i + gray.shape[1]] for i, k in enumerate(kernel))
    return sum(k * rows[i:i + gray.shape[0], :] for i, k in enumerate(kernel))


def _gradients(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.pad(gray, 1, mode="edge")
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    return np.abs(gx) + np.abs(gy), np.arctan2(gy, gx)  # OpenCV's scale: a step of 255 gives 1,020


def _non_maximum(magnitude: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Keep a pixel only where it is the largest of its two neighbours across the edge (4 directions)."""
    direction = (np.round(angle / (np.pi / 4)) % 4).astype(int)  # 0: →, 1: ↘, 2: ↓, 3: ↙
    p = np.pad(magnitude, 1)
    h, w = magnitude.shape
    shifted = {(dy, dx): p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    steps = [(0, 1), (1, 1), (1, 0), (1, -1)]
    keep = np.zeros_like(magnitude, dtype=bool)
    for d, (dy, dx) in enumerate(steps):
        side_a, side_b = shifted[(dy, dx)], shifted[(-dy, -dx)]
        keep |= (direction == d) & (magnitude > side_a) & (magnitude >= side_b)  # a tie keeps one of two
    return np.where(keep, magnitude, 0.0)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    out = np.asarray(mask, dtype=bool)
    for _ in range(radius):
        p = np.pad(out, 1)
        out = (p[1:-1, 1:-1] | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:] | p[:-2, :-2] | p[:-2, 2:]
               | p[2:, :-2] | p[2:, 2:])
    return out


def load_controlnet(model, location: str):
    """The ControlNet at `location` (a folder or hub id the host admitted), loaded once per image model on the
    model's device and dtype. One for another model family (its cross-attention width differs from the UNet's)
    is refused in words."""
    import torch
    from diffusers import ControlNetModel

    from pipelines.memory import DoesNotFit, check_addon_fits, module_bytes
    from pipelines.registry import ModelNotAvailable

    with model.lock:
        if location in model.controlnets:
            return model.controlnets[location]
        plan = model.plan
        if plan is not None and plan.placement != "device":
            raise ModelNotAvailable(f"ControlNet needs {model.name} wholly on the GPU, and this card's memory plan "
                                    f"offloads it ({plan.describe()}): free the GPU or use a smaller model")
        try:
            net = ControlNetModel.from_pretrained(location, torch_dtype=model.placement.dtype,
                                                  local_files_only=_is_folder(location), use_safetensors=True)
        except Exception as exc:  # missing, corrupt, not a ControlNet: one plain message
            raise ModelNotAvailable(f"could not load the ControlNet {short(location)}: {short(str(exc), 300)}") \
                from exc
        unet = getattr(model.pipe, "unet", None)
        wants, has = getattr(net.config, "cross_attention_dim", None), getattr(getattr(unet, "config", None),
                                                                              "cross_attention_dim", None)
        if unet is None or wants != has:
            raise ModelNotAvailable(f"the ControlNet {short(location)} is made for another kind of model (its text "
                                    f"width is {wants}, {model.name}'s is {has}): use a ControlNet trained for "
                                    f"{model.name}'s family (SD 1.x, or SDXL)")
        try:  # memory plans count it: it joins the model on the device
            check_addon_fits(model.placement.device, f"the ControlNet {short(location)}", module_bytes(net))
        except DoesNotFit as exc:
            raise ModelNotAvailable(str(exc)) from exc
        net = net.to(model.placement.device).eval()
        if model.placement.device.type == "cuda":  # as the UNet (pipelines.image_speed)
            net = net.to(memory_format=torch.channels_last)
        model.controlnets[location] = net
        return net


def _is_folder(location: str) -> bool:
    from pathlib import Path

    try:
        return Path(location).expanduser().is_dir()
    except OSError:
        return False


def control_pipeline(model, mode: str, units: tuple[ControlUnit, ...]):
    """A pipeline object for one request: the mode's ControlNet pipeline over the shared weights and the units'
    ControlNets (one, or several as a MultiControlNetModel)."""
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    from pipelines.registry import ModelNotAvailable

    nets = [load_controlnet(model, unit.model) for unit in units]
    controlnet = nets[0] if len(nets) == 1 else MultiControlNetModel(nets)
    auto = {"txt2img": AutoPipelineForText2Image, "img2img": AutoPipelineForImage2Image}.get(
        mode, AutoPipelineForInpainting)
    try:
        with model.lock:
            return auto.from_pipe(model.pipe, controlnet=controlnet)
    except (ValueError, KeyError) as exc:
        raise ModelNotAvailable(f"{model.name} has no ControlNet pipeline ({exc})") from exc


def control_inputs(params, units: tuple[ControlUnit, ...]) -> dict:
    """The ControlNet arguments of a diffusers call: the control pictures (the txt2img pipeline takes them as
    `image`, img2img and inpaint as `control_image`; diffusers repeats them over the batch), weights, start/end."""
    pictures = [control_picture(unit, params.width, params.height) for unit in units]
    single = len(units) == 1
    images = pictures[0] if single else pictures
    key = "image" if params.mode == "txt2img" else "control_image"
    scale = [u.weight for u in units]
    return {key: images, "controlnet_conditioning_scale": scale[0] if single else scale,
            "control_guidance_start": [u.start for u in units], "control_guidance_end": [u.end for u in units]}
