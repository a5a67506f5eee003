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


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
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
