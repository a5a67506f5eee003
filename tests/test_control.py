"""ControlNet on tiny random-weight models (diffusers' own test configs): the preprocessors that need no
weights, a unit's weight and span, several units at once, img2img and inpaint with a control picture, a
ControlNet for another model family refused in words, and the PNG's A1111 `ControlNet 0:` text."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.device import pick_placement
from pipelines.image import ImageLimits, ImageParams, ImagePipeline, load_image_model
from pipelines.image_control import ControlUnit, canny, control_picture
from pipelines.registry import ModelNotAvailable, Registry

PARAMS = ImageParams(prompt="a red fox", steps=3, batch_size=2, width=64, height=64, seed=4, scheduler="Euler")


def square(size: int = 64) -> Image.Image:
    pixels = np.zeros((size, size, 3), np.uint8)
    pixels[size // 4:size * 3 // 4, size // 4:size * 3 // 4] = 255
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def tiny(tiny_sd_dir):
    registry = Registry(tiny_sd_dir.parent / "cache", offline=True)
    model = load_image_model(registry.resolve(registry.lookup(str(tiny_sd_dir), "image")), pick_placement("cpu"),
                             offline=True)
    return ImagePipeline(model, ImageLimits(max_steps=60, max_batch_size=4))


def build_controlnet(folder, unet, seed: int, **changes):
    from diffusers import ControlNetModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
        if changes:
            net = ControlNetModel.from_config({**net.config, **changes})
        for p in net.parameters():  # diffusers starts the zero convolutions at zero: make them steer
            torch.nn.init.normal_(p, std=0.05)
    net.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def nets(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("controlnets")
    unet = tiny.model.pipe.unet
    return build_controlnet(root / "a", unet, 1), build_controlnet(root / "b", unet, 2), \
        build_controlnet(root / "other", unet, 3, cross_attention_dim=48)


def pixels(out) -> np.ndarray:
    return np.stack([np.asarray(image) for image in out.images]).astype(np.int16)


def test_canny_draws_one_pixel_outlines_as_opencv_would():
    edges = canny(np.asarray(square().convert("L"), dtype=np.float64), 100, 200)
    ys, xs = np.nonzero(edges)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (16, 48, 16, 48)
    assert 120 <= edges.sum() <= 132  # the square's outline, one pixel wide
    assert edges[20:44, 20:44].sum() == 0 and edges[:12].sum() == 0
    faint = Image.fromarray((np.asarray(square()) * 0.05).astype(np.uint8))  # a step of 12: under both thresholds
    assert canny(np.asarray(faint.convert("L"), dtype=np.float64), 100, 200).sum() == 0


def test_preprocessors_make_light_lines_on_black_at_the_picture_size():
    drawn = Image.new("RGB", (100, 80), "white")
    drawn.paste((0, 0, 0), (10, 40, 90, 43))  # a dark stroke on paper
    sketch = np.asarray(control_picture(ControlUnit("net", drawn, "sketch"), 64, 48))
    assert sketch.shape == (48, 64, 3) and sketch[:20].max() == 0 and sketch[24:27].max() > 200
    for name in ("canny", "lineart", "scribble"):
        lines = np.asarray(control_picture(ControlUnit("net", square(), name), 64, 64))
        assert lines[:10].max() == 0 and lines.max() == 255, name
    scribble = np.asarray(control_picture(ControlUnit("net", square(), "scribble"), 64, 64))[..., 0] > 0
    assert scribble.sum() > 1.5 * np.asarray(control_picture(ControlUnit("net", square()), 64, 64))[..., 0].astype(
        bool).sum()  # thickened strokes
    depth = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (64, 1, 3)))
    assert np.array_equal(np.asarray(control_picture(ControlUnit("net", depth, "none"), 64, 64)), np.asarray(depth))


def test_units_say_which_value_is_wrong():
    for kwargs, message in (({"weight": 2.5}, "controlnet weight must be"), ({"start": 0.6, "end": 0.4},
                            "controlnet start must be before its end"), ({"preprocessor": "depth_midas"},
                            "preprocessor must be one of canny, lineart"), ({"low": 150, "high": 100},
                            "low must be below high")):
        with pytest.raises(ValueError, match=message):
            ControlUnit("net", square(), **kwargs)
    with pytest.raises(ValueError, match="give each ControlNet unit a picture"):
        ControlUnit("net", None)
    with pytest.raises(ValueError, match="at most 3 ControlNet units"):
        replace(PARAMS, controls=(ControlUnit("net", square()),) * 4)
    with pytest.raises(ValueError, match="not with outpainting"):
        ImageParams(mode="outpaint", init_image=square(), controls=(ControlUnit("net", square()),), outpaint=None)


def test_a_controlnet_steers_the_picture_by_its_weight_and_span(tiny, nets):
    plain = pixels(tiny(PARAMS))
    unit = ControlUnit(nets[0], square(), "canny")
    steered = pixels(tiny(replace(PARAMS, controls=(unit,))))
    assert np.abs(steered - plain).mean() > 1  # the control picture changed it
    assert np.array_equal(pixels(tiny(replace(PARAMS, controls=(unit,)))), steered)  # seeded: the same again
    off = pixels(tiny(replace(PARAMS, controls=(replace(unit, weight=0.0),))))
    assert np.array_equal(off, plain)  # weight 0 adds nothing
    late = pixels(tiny(replace(PARAMS, controls=(replace(unit, start=0.5),))))  # of 3 steps, the last
    assert 0 < np.abs(late - plain).mean() < np.abs(steered - plain).mean()  # the last step only: a smaller change
    both = pixels(tiny(replace(PARAMS, controls=(unit, ControlUnit(nets[1], square(32), "none", weight=0.5)))))
    assert not np.array_equal(both, steered)


def test_image_to_image_and_inpaint_take_a_control_picture(tiny, nets):
    start = Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    unit = ControlUnit(nets[0], square(), "canny")
    for mode, extra in (("img2img", {}), ("inpaint", {"mask": mask})):
        params = replace(PARAMS, mode=mode, init_image=start, strength=0.8, **extra)
        plain, steered = pixels(tiny(params)), pixels(tiny(replace(params, controls=(unit,))))
        assert steered.shape == plain.shape and np.abs(steered - plain).mean() > 0.5, mode


def test_a_controlnet_for_another_model_family_is_refused_in_words(tiny, nets):
    with pytest.raises(ModelNotAvailable, match="made for another kind of model .* text width is 48"):
        tiny(replace(PARAMS, controls=(ControlUnit(nets[2], square()),)))
    with pytest.raises(ModelNotAvailable, match="could not load the ControlNet"):
        tiny(replace(PARAMS, controls=(ControlUnit(str(nets[2]) + "-missing", square()),)))


@pytest.mark.slow  # the real embedded emoji model
def test_the_emoji_model_says_no_sd_controlnet_fits_it(emoji_pipeline, nets):
    """The embedded emoji model reads MiniLM's 384-wide text: an SD ControlNet (here one 32 wide) is refused in
    words, and the model still draws without it."""
    emoji = emoji_pipeline
    params = replace(PARAMS, batch_size=1)
    with pytest.raises(ModelNotAvailable, match="made for another kind of model .* 32, emoji-ldm's is 384"):
        emoji(replace(params, controls=(ControlUnit(nets[0], square()),)))
    assert emoji(params).images[0].size == (64, 64)


def test_the_depth_preprocessor_reads_a_picture_with_a_depth_model(tiny, nets, tmp_path):
    """Depth: a depth model's estimate of the picture, stretched to black … white at the picture's size, steers
    the picture; without the model on disk (offline) it says how to get one."""
    from pipelines.image_control import load_estimator
    from tests.conftest import build_tiny_depth_model

    estimator = load_estimator("depth", str(build_tiny_depth_model(tmp_path / "depth")), pick_placement("cpu"))
    picture = Image.fromarray((np.random.default_rng(1).random((48, 80, 3)) * 255).astype(np.uint8))
    depth = np.asarray(control_picture(ControlUnit("net", picture, "depth", estimator=estimator), 64, 40))
    assert depth.shape == (40, 64, 3) and (depth[..., 0] == depth[..., 2]).all()
    assert depth.min() == 0 and depth.max() == 255
    unit = ControlUnit(nets[0], picture, "depth", estimator=estimator)
    assert np.abs(pixels(tiny(replace(PARAMS, controls=(unit,)))) - pixels(tiny(PARAMS))).mean() > 1
    with pytest.raises(ValueError, match="no depth estimator was given"):
        ControlUnit(nets[0], picture, "depth")
    with pytest.raises(ModelNotAvailable, match="needs Depth Anything V2 Small .* `studio fetch depth-anything"):
        load_estimator("depth", "nobody/no-such-depth-model", pick_placement("cpu"), offline=True)


def test_the_pose_preprocessor_finds_keypoints_in_the_picture_and_draws_openposes_skeleton(tmp_path):
    """Pose: a keypoint model's heatmap peaks, mapped back from its letterboxed input to the picture's pixels,
    become OpenPose's 18 points (the neck between the shoulders), drawn in its colours; a real (tiny random) ViTPose
    loads and draws at the picture's size."""
    from types import SimpleNamespace

    import torch

    from pipelines.image_control import OPENPOSE_COLOURS, PoseEstimator, load_estimator
    from tests.conftest import build_tiny_pose_model

    class Peaks(torch.nn.Module):  # heatmaps [17, 16, 12] for a 64×48 input, each keypoint peaking where told
        config = SimpleNamespace(backbone_config=SimpleNamespace(image_size=(64, 48)))

        device, dtype = torch.device("cpu"), torch.float32

        def __init__(self, cells):
            super().__init__()
            self.cells = cells

        def forward(self, pixel_values):
            heat = torch.zeros(1, 17, 16, 12)
            for k, (row, col) in enumerate(self.cells):
                heat[0, k, row, col] = 1.0
            return SimpleNamespace(heatmaps=heat)

    cells = [(14, 1)] * 17
    cells[0], cells[5], cells[6] = (8, 6), (4, 2), (4, 10)  # the nose, the left and the right shoulder
    pose = PoseEstimator(Peaks(cells), SimpleNamespace(image_mean=(0.5,) * 3, image_std=(0.5,) * 3))
    points = pose.keypoints(Image.new("RGB", (96, 64)))  # 96×64 fills the 48-wide input at ×0.5, 16 px bands above
    assert points[0] == (52.0, 36.0)  # the nose: cell (8, 6) of 4×4 px → input (26, 34) → picture (52, (34-16)×2)
    assert points[5] == (20.0, 4.0)  # OpenPose's 5 is COCO's left shoulder: cell (4, 2) → input (10, 18)
    assert points[1] == ((points[2][0] + points[5][0]) / 2, (points[2][1] + points[5][1]) / 2)  # the neck
    drawn = np.asarray(pose(Image.new("RGB", (96, 64))))
    assert drawn.shape == (64, 96, 3) and tuple(drawn[36, 52]) == OPENPOSE_COLOURS[0]
    real = load_estimator("pose", str(build_tiny_pose_model(tmp_path / "pose")), pick_placement("cpu"))
    real.threshold = float("-inf")  # random weights: every keypoint drawn wherever it peaks
    assert np.asarray(real(square(80))).shape == (80, 80, 3) and np.asarray(real(square(80))).max() > 0
