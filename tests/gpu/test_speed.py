"""The GPU speed path on CUDA (skipped without one): an SD 1.5-architecture model (random weights, float16) under
`speed_up` with inductor — channels-last, fused QKV, SDPA, the UNet and decoder compiled — draws what eager draws
within float16 rounding, is faster per step, says when a new size compiles, and TAESD previews come at full size.

    python3 studio/bootstrap.py test tests/gpu -m gpu -s       # prints the step times
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from tests.gpu.test_cuda import sd15_architecture

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _model(tmp_path, name: str):
    from pipelines.device import Placement
    from pipelines.image import ImageModel

    return ImageModel(sd15_architecture(tmp_path / name).to("cuda"), name, Placement(torch.device("cuda"),
                                                                                     torch.float16))


def _seconds(pipe, params, reps: int = 3) -> float:
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        started = time.perf_counter()
        pipe(params)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def test_compiled_sd15_draws_the_eager_picture_faster(tmp_path):
    from pipelines.image import ImageParams, ImagePipeline
    from pipelines.image_speed import SpeedParams, speed_up

    params = ImageParams(prompt="a red fox", steps=20, width=512, height=512, seed=1, scheduler="Euler")
    eager = ImagePipeline(_model(tmp_path, "eager"))
    fast_model = _model(tmp_path, "fast")
    applied = speed_up(fast_model, SpeedParams.for_device(torch.device("cuda"), compile=True,
                                                          compile_mode="max-autotune-no-cudagraphs"))
    assert {"SDPA attention", "channels-last", "fused QKV projections"} <= set(applied), applied
    fast = ImagePipeline(fast_model)
    assert "512×512" in fast.compile_note(params)
    started = time.perf_counter()
    compiled_picture = fast(params).images[0]
    print(f"\nfirst compiled picture (compiles): {time.perf_counter() - started:.1f} s")
    assert fast.compile_note(params) == ""
    difference = np.abs(np.asarray(compiled_picture, np.int16) - np.asarray(eager(params).images[0], np.int16))
    assert difference.mean() < 2.0, difference.mean()  # float16 kernels add in another order; the picture holds
    slow_s, fast_s = _seconds(eager, params), _seconds(fast, params)
    print(f"SD 1.5 arch 512², 20 steps: eager {slow_s:.3f} s, compiled {fast_s:.3f} s ({slow_s / fast_s:.2f}×)")
    assert fast_s < slow_s


def test_taesd_previews_are_full_size_on_the_gpu(tmp_path):
    from diffusers import AutoencoderTiny

    from pipelines.image import ImageParams, ImagePipeline
    from pipelines.image_speed import SpeedParams, speed_up

    folder = tmp_path / "taesd"
    torch.manual_seed(0)
    AutoencoderTiny().save_pretrained(folder)  # TAESD's own architecture, random weights
    model = _model(tmp_path, "previews")
    assert "TAESD live previews" in speed_up(model, SpeedParams(preview_decoder=str(folder)))
    previews = []
    ImagePipeline(model)(ImageParams(prompt="a red fox", steps=6, width=512, height=384, seed=1, scheduler="Euler"),
                         callback=lambda step, total, preview: previews.append(preview), preview_every=2)
    sizes = {p.size for p in previews if p is not None}
    assert sizes == {(512, 384)}, sizes
