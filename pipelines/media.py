"""Image and animation files: grids, GIF and MP4 export, PNG bytes."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np


def to_uint8(images) -> np.ndarray:
    """[N, 3, H, W] tensor in [-1, 1] → uint8 [N, H, W, 3]."""
    array = images.detach().float().clamp(-1, 1).add(1).mul(127.5).round().byte().permute(0, 2, 3, 1)
    return array.cpu().numpy()


def upscale(frame: np.ndarray, factor: int):
    from PIL import Image

    image = Image.fromarray(frame)
    if factor > 1:
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.LANCZOS)
    return image


def grid(images: np.ndarray, columns: int, pad: int = 2, background=(255, 255, 255)):
    from PIL import Image

    rows = math.ceil(len(images) / columns)
    h, w = images.shape[1:3]
    canvas = Image.new("RGB", (columns * (w + pad) + pad, rows * (h + pad) + pad), background)
    for i, img in enumerate(images):
        canvas.paste(Image.fromarray(img), (pad + (i % columns) * (w + pad), pad + (i // columns) * (h + pad)))
    return canvas


# zlib level 4 (ComfyUI's choice) instead of PIL's 6: a 512² picture encodes in less than half the time, ~2%
# larger (benchmarks/overhead.py measures both); on a GPU, where a picture takes a fraction of a second, level
# 6's extra ~35 ms a 512² picture would be much of the wait
PNG_LEVEL = 4


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_LEVEL)
    return buffer.getvalue()


def gif_bytes(frames: np.ndarray, fps: float, loop: bool = True, scale: int = 1) -> bytes:
    """An animated GIF of uint8 frames [N, H, W, 3]; `loop` repeats forever, else plays once."""
    images = [upscale(f, scale) for f in frames]
    buffer = io.BytesIO()
    extra = {"loop": 0} if loop else {}
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(20, round(1000 / fps)), disposal=2, **extra)
    return buffer.getvalue()


def mp4_bytes(frames: np.ndarray, fps: float, scale: int = 1, repeat: int = 1) -> bytes:
    """An H.264 MP4 (yuv420p, plays everywhere) via the ffmpeg binary that `imageio-ffmpeg` ships."""
    import tempfile

    import imageio_ffmpeg

    images = [np.ascontiguousarray(np.asarray(upscale(f, scale))) for f in frames] * max(1, repeat)
    h, w = images[0].shape[:2]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.mp4"
        writer = imageio_ffmpeg.write_frames(str(path), (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                             macro_block_size=1, quality=8)
        writer.send(None)
        for image in images:
            writer.send(image)
        writer.close()
        return path.read_bytes()


def count_video_frames(data: bytes, suffix: str) -> int:
    """Decode a GIF/MP4 and count its frames (used by tests and checks)."""
    import tempfile

    if suffix == ".gif":
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            return im.n_frames
    import imageio_ffmpeg

    with tempfile.NamedTemporaryFile(suffix=suffix) as f:
        f.write(data)
        f.flush()
        frames, _ = imageio_ffmpeg.count_frames_and_secs(f.name)
        return frames


# -- PNG metadata: AUTOMATIC1111 "parameters", our JSON, and an AI-generated provenance mark -------

XMP_AI_GENERATED = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
 xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:xmp="http://ns.adobe.com/xap/1.0/"
 Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
 xmp:CreatorTool="GenAI Studio"/>
</rdf:RDF></x:xmpmeta>
<?xpacket end="w"?>"""


def a1111_parameters(prompt: str, negative: str, settings: dict) -> str:
    """The AUTOMATIC1111 `parameters` text: prompt line, `Negative prompt:` line, then `Key: value, …`."""
    lines = [prompt]
    if negative:
        lines.append(f"Negative prompt: {negative}")
    lines.append(", ".join(f"{k}: {v}" for k, v in settings.items() if v is not None and v != ""))
    return "\n".join(lines)


def parse_a1111_parameters(text: str) -> dict:
    """Parse A1111-style `parameters` text back into prompt, negative prompt and settings."""
    lines = text.strip().split("\n")
    settings_line = lines[-1] if len(lines) > 1 and lines[-1].startswith("Steps:") else ""
    body = lines[:-1] if settings_line else lines
    prompt_lines, negative_lines, in_negative = [], [], False
    for line in body:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    settings = {}
    for key, value in _split_settings(settings_line):
        settings[key] = value
    return {"prompt": "\n".join(prompt_lines).strip(), "negative_prompt": "\n".join(negative_lines).strip(),
            "settings": settings}


def _split_settings(line: str) -> list[tuple[str, str]]:
    import re

    # Values may be quoted and contain commas (A1111 quotes such values).
    pattern = re.compile(r'\s*([\w \-/]+):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')
    return [(m.group(1).strip(), m.group(2).strip().strip('"')) for m in pattern.finditer(line) if m.group(1).strip()]


def png_with_metadata(image, parameters: str, data: dict, level: int = PNG_LEVEL) -> bytes:
    """PNG bytes with `parameters` (A1111), `genai-studio` (JSON) and XMP provenance chunks (zlib `level`)."""
    import json as _json

    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", parameters)
    info.add_itxt("genai-studio", _json.dumps(data))
    info.add_itxt("XML:com.adobe.xmp", XMP_AI_GENERATED)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=level)
    return buffer.getvalue()


def read_png_info(path) -> dict:
    """What a PNG says about how it was made: A1111 parameters (ours or another tool's), our JSON,
    and whether it is marked AI-generated."""
    import json as _json

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            text = dict(getattr(image, "text", {}) or image.info)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError("the file is not an image PIL can read") from exc
    result = {"parameters": text.get("parameters", ""), "studio": None,
              "ai_generated": "trainedAlgorithmicMedia" in str(text.get("XML:com.adobe.xmp", ""))}
    if text.get("genai-studio"):
        try:
            result["studio"] = _json.loads(text["genai-studio"])
        except ValueError:
            result["studio"] = None
    if result["parameters"]:
        result.update(parse_a1111_parameters(result["parameters"]))
    return result
