"""ImageParams.to_record / from_record: the one conversion between a request and the plain dict kept in a PNG's
text and a History row (and read back by restore, PNG info and Explore)."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from pipelines.image import ImageParams, Lora
from pipelines.image_prompt import Style
from pipelines.image_regions import Region
from pipelines.image_upscale import HiresParams, OutpaintParams

EVERYTHING = ImageParams(prompt="a castle BREAK a dragon", negative_prompt="blurry", steps=7, guidance=5.5, width=96,
                         height=128, scheduler="Euler a", seed=42, variation_seed=7, variation_strength=0.25,
                         strength=0.6, batch_size=2, batch_count=3, hires=HiresParams(1.5, "Lanczos", 4, 0.4),
                         style=Style("Ink", "{prompt}, ink", "colour"),
                         regions=(Region("a castle", (0.0, 0.0, 0.5, 1.0), 0.8),
                                  Region("a dragon", (0.5, 0.0, 1.0, 1.0), 0.8)))


@pytest.mark.parametrize("params", [
    ImageParams(),
    EVERYTHING,
    ImageParams(prompt="wider", mode="outpaint", width=64, height=64, strength=1.0,
                outpaint=OutpaintParams(8, 16, 0, 24, 8), init_image=object()),
], ids=["defaults", "txt2img-everything", "outpaint"])
def test_every_setting_survives_a_record_and_its_json(params):
    record = json.loads(json.dumps(params.to_record()))  # as a PNG's text keeps it
    back = ImageParams.from_record(record, init_image=params.init_image)
    assert back == params
    for f in fields(ImageParams):  # field by field, so a field left out of the record is named
        if f.compare:
            assert getattr(back, f.name) == getattr(params, f.name), f.name


def test_loras_are_kept_by_name_and_weight_and_their_files_given_back():
    params = ImageParams(prompt="fox", loras=(Lora("ink", "/tmp/ink.safetensors", 0.8),))
    record = params.to_record()
    assert record["loras"] == {"ink": 0.8} and "/tmp" not in json.dumps(record)  # no server path in a PNG
    assert ImageParams.from_record(record).loras == ()
    assert ImageParams.from_record(record, loras=params.loras) == params


def test_a_history_rows_own_keys_are_not_settings_and_a_picture_is_given_by_name():
    record = {**EVERYTHING.to_record(), "model": "emoji-ldm", "device": "cpu"}
    assert ImageParams.from_record(record) == EVERYTHING
    with pytest.raises(ValueError, match="read from the record itself"):
        ImageParams.from_record(record, steps=3)
