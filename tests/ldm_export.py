"""Write a diffusers Stable Diffusion 1.x folder as one original-format (LDM) checkpoint file.

Test helper only: it lets the single-file loader be tested offline on tiny random-weight models.
The key layout is the original CompVis one that `from_single_file` converts back.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from safetensors.torch import load_file, save_file

RESNET_PARTS = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
                "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
VAE_ATTENTION_PARTS = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _weights(folder: Path) -> dict:
    return load_file(next(folder.glob("*.safetensors")))


def _unet_key(key: str, layers: int, attention_blocks: set[int]) -> str:
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    for old, new in fixed.items():
        if key.startswith(old + "."):
            return new + key[len(old):]
    if m := re.match(r"(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(.*)", key):
        side, b, j, part, rest = m.groups()
        index = 1 + int(b) * (layers + 1) + int(j) if side == "down" else int(b) * (layers + 1) + int(j)
        name = "input_blocks" if side == "down" else "output_blocks"
        return f"{name}.{index}.0.{RESNET_PARTS[part]}.{rest}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(\w+)\.(.*)", key):
        r, part, rest = m.groups()
        return f"middle_block.{2 * int(r)}.{RESNET_PARTS[part]}.{rest}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m.group(1)}"
    if m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
        b, j, rest = m.groups()
        return f"input_blocks.{1 + int(b) * (layers + 1) + int(j)}.1.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
        b, j, rest = m.groups()
        return f"output_blocks.{int(b) * (layers + 1) + int(j)}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        b, rest = m.groups()
        return f"input_blocks.{(int(b) + 1) * (layers + 1)}.0.op.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        b, rest = m.groups()
        slot = 2 if int(b) in attention_blocks else 1
        return f"output_blocks.{int(b) * (layers + 1) + layers}.{slot}.conv.{rest}"
    raise KeyError(f"no LDM name for UNet key {key}")


def _vae_key(key: str, n_up: int) -> str:
    key = key.replace("conv_norm_out", "norm_out")
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        i, j, rest = m.groups()
        return f"encoder.down.{i}.block.{j}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"encoder.down.{m.group(1)}.downsample.conv.{m.group(2)}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        i, j, rest = m.groups()
        return f"decoder.up.{n_up - 1 - int(i)}.block.{j}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        return f"decoder.up.{n_up - 1 - int(m.group(1))}.upsample.conv.{m.group(2)}"
    if m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
        side, r, rest = m.groups()
        return f"{side}.mid.block_{int(r) + 1}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
    if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", key):
        side, rest = m.groups()
        for old, new in VAE_ATTENTION_PARTS.items():
            if rest.startswith(old + "."):
                rest = new + rest[len(old):]
        return f"{side}.mid.attn_1.{rest}"
    return key  # conv_in, conv_out, norm_out, quant_conv, post_quant_conv keep their names


def export_ldm_checkpoint(folder: Path, out: Path) -> Path:
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    layers = unet_config["layers_per_block"]
    attention_blocks = {i for i, t in enumerate(unet_config["up_block_types"]) if "CrossAttn" in t}
    checkpoint = {}
    for key, tensor in _weights(folder / "unet").items():
        checkpoint["model.diffusion_model." + _unet_key(key, layers, attention_blocks)] = tensor
    for key, tensor in _weights(folder / "vae").items():
        name = _vae_key(key, len(vae_config["up_block_types"]))
        if ".mid.attn_1." in name and name.endswith(".weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]  # the original VAE attention uses 1×1 convolutions
        checkpoint["first_stage_model." + name] = tensor
    for key, tensor in _weights(folder / "text_encoder").items():
        # transformers >= 5.6 saves CLIPTextModel without the `text_model.` level the original layout has
        key = key if key.startswith("text_model.") else "text_model." + key
        checkpoint["cond_stage_model.transformer." + key] = tensor
    save_file({k: v.contiguous() for k, v in checkpoint.items()}, out)
    return out
