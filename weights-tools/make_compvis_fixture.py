#!/usr/bin/env python3
"""A single-file CompVis (original Stable Diffusion) checkpoint made from the tiny SD 1.x fixture, for the test of
`p2p-wgpu convert` (tests/convert.rs).

What it writes:

- tests/fixtures/compvis/tiny-sd1.safetensors: every tensor of tests/fixtures/sd1-tiny (unet/, vae/,
  text_encoder/; the plain f32 files, not the fp16 variant) under its CompVis name (`model.diffusion_model.*`,
  `first_stage_model.*`, `cond_stage_model.transformer.text_model.*`), with the VAE mid-block attention weights as
  1x1 convs [C, C, 1, 1] as CompVis stores them. Plus the extra entries real SD 1.x checkpoints carry and the
  converter must skip knowingly: the DDPM schedule buffers (`betas`, `alphas_cumprod`, ... computed as
  ldm/models/diffusion/ddpm.py does, from the fixture's scheduler config), `model_ema.decay`,
  `model_ema.num_updates` and one flattened EMA tensor, and `cond_stage_model.transformer.text_model.embeddings.
  position_ids` (I64). The tensor bytes are the fixture's, so the converter must give back the original diffusers
  files exactly.
- tests/fixtures/compvis/sd15-keys.json: for Stable Diffusion 1.5's real configs (src/convert/sd15/*.json, the
  converter's built-in `--preset sd15`), every parameter as [CompVis name, diffusers name, diffusers shape], per
  component. The shapes come from diffusers / transformers models built on the meta device (no weights). The test
  checks that the converter's config-driven mapping gives exactly this list at SD 1.5's size, which the tiny file
  cannot show (12 output blocks, attention in 3 of 4 levels, the upsampler at index 2 after an attention).

The diffusers -> CompVis mapping below is our own code (p2p-wgpu project), the inverse of the Rust converter's
(src/convert/mapping.rs), written separately from it. Both directions being ours, the script checks its output
against a third party: diffusers' own single-file conversion functions (`convert_ldm_unet_checkpoint`,
`convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint` in diffusers.loaders.single_file_utils, which were
written against real CompVis checkpoints) must turn the CompVis names back into exactly the diffusers names and
tensors, for the tiny file (values compared bit for bit) and for the SD 1.5 key list (names and shapes). A test
against a real SD 1.x checkpoint file still needs such a file; none is committed.

Pinned environment (weights-tools/requirements.txt): torch 2.15.0 (CPU), diffusers 0.42.1, transformers 5.23.0,
safetensors 0.8.0, numpy 2.4.6. Run from the repository root (about 5 s, byte-identical output on every run):

    weights-tools/.venv/bin/python weights-tools/make_compvis_fixture.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
)
from transformers import CLIPTextConfig, CLIPTextModel

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "tests/fixtures/sd1-tiny"
OUT_DIR = REPO / "tests/fixtures/compvis"
OUT = OUT_DIR / "tiny-sd1.safetensors"
SD15_KEYS = OUT_DIR / "sd15-keys.json"
SD15_CONFIGS = REPO / "src/convert/sd15"

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

# Leaf renames inside a module, diffusers -> CompVis.
UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
VAE_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "conv_shortcut": "nin_shortcut"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def unet_modules(cfg: dict) -> dict[str, tuple[str, dict | None]]:
    """diffusers module prefix -> (CompVis module prefix, leaf renames or None for identical leaves)."""
    n = len(cfg["block_out_channels"])
    layers = cfg["layers_per_block"]
    m: dict[str, tuple[str, dict | None]] = {
        "time_embedding.linear_1": ("time_embed.0", None),
        "time_embedding.linear_2": ("time_embed.2", None),
        "conv_in": ("input_blocks.0.0", None),
    }
    idx = 1
    for b, kind in enumerate(cfg["down_block_types"]):
        cross = kind.startswith("CrossAttn")
        for j in range(layers):
            m[f"down_blocks.{b}.resnets.{j}"] = (f"input_blocks.{idx}.0", UNET_RESNET)
            if cross:
                m[f"down_blocks.{b}.attentions.{j}"] = (f"input_blocks.{idx}.1", None)
            idx += 1
        if b < n - 1:
            m[f"down_blocks.{b}.downsamplers.0.conv"] = (f"input_blocks.{idx}.0.op", None)
            idx += 1
    m["mid_block.resnets.0"] = ("middle_block.0", UNET_RESNET)
    m["mid_block.attentions.0"] = ("middle_block.1", None)
    m["mid_block.resnets.1"] = ("middle_block.2", UNET_RESNET)
    idx = 0
    for b, kind in enumerate(cfg["up_block_types"]):
        cross = kind.startswith("CrossAttn")
        for j in range(layers + 1):
            m[f"up_blocks.{b}.resnets.{j}"] = (f"output_blocks.{idx}.0", UNET_RESNET)
            if cross:
                m[f"up_blocks.{b}.attentions.{j}"] = (f"output_blocks.{idx}.1", None)
            if j == layers and b < n - 1:
                m[f"up_blocks.{b}.upsamplers.0.conv"] = (f"output_blocks.{idx}.{2 if cross else 1}.conv", None)
            idx += 1
    m["conv_norm_out"] = ("out.0", None)
    m["conv_out"] = ("out.2", None)
    return m


def vae_modules(cfg: dict) -> dict[str, tuple[str, dict | None]]:
    n = len(cfg["block_out_channels"])
    layers = cfg["layers_per_block"]
    m: dict[str, tuple[str, dict | None]] = {"encoder.conv_in": ("encoder.conv_in", None)}
    for i in range(n):
        for j in range(layers):
            m[f"encoder.down_blocks.{i}.resnets.{j}"] = (f"encoder.down.{i}.block.{j}", VAE_RESNET)
        if i < n - 1:
            m[f"encoder.down_blocks.{i}.downsamplers.0.conv"] = (f"encoder.down.{i}.downsample.conv", None)
    for side in ("encoder", "decoder"):
        m[f"{side}.mid_block.resnets.0"] = (f"{side}.mid.block_1", VAE_RESNET)
        m[f"{side}.mid_block.attentions.0"] = (f"{side}.mid.attn_1", VAE_ATTENTION)
        m[f"{side}.mid_block.resnets.1"] = (f"{side}.mid.block_2", VAE_RESNET)
        m[f"{side}.conv_norm_out"] = (f"{side}.norm_out", None)
        m[f"{side}.conv_out"] = (f"{side}.conv_out", None)
    m["quant_conv"] = ("quant_conv", None)
    m["post_quant_conv"] = ("post_quant_conv", None)
    m["decoder.conv_in"] = ("decoder.conv_in", None)
    for b in range(n):
        k = n - 1 - b  # CompVis stores the decoder's up blocks in reverse order
        for j in range(layers + 1):
            m[f"decoder.up_blocks.{b}.resnets.{j}"] = (f"decoder.up.{k}.block.{j}", VAE_RESNET)
        if b < n - 1:
            m[f"decoder.up_blocks.{b}.upsamplers.0.conv"] = (f"decoder.up.{k}.upsample.conv", None)
    return m


def compvis_name(key: str, modules: dict[str, tuple[str, dict | None]]) -> str:
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in modules:
            target, leaves = modules[prefix]
            rest = ".".join(parts[i:])
            if leaves is not None:
                for old, new in leaves.items():
                    if rest.startswith(old + "."):
                        rest = new + rest[len(old):]
                        break
                else:
                    raise SystemExit(f"{key}: no leaf rename for {rest!r}")
            return f"{target}.{rest}"
    raise SystemExit(f"{key}: no module mapping")


def is_vae_attention_weight(compvis: str) -> bool:
    parts = compvis.split(".")
    return ".mid.attn_1." in compvis and parts[-2] in ("q", "k", "v", "proj_out") and parts[-1] == "weight"


def to_compvis(unet: dict, vae: dict, text: dict, unet_cfg: dict, vae_cfg: dict) -> dict:
    """diffusers state dicts (name -> array or shape) -> one CompVis dict (name -> (diffusers component, name))."""
    out: dict[str, tuple[str, str]] = {}

    def put(name: str, value: tuple[str, str]) -> None:
        if name in out:
            raise SystemExit(f"two tensors map to {name}")
        out[name] = value

    um, vm = unet_modules(unet_cfg), vae_modules(vae_cfg)
    for k in unet:
        put(UNET_PREFIX + compvis_name(k, um), ("unet", k))
    for k in vae:
        put(VAE_PREFIX + compvis_name(k, vm), ("vae", k))
    for k in text:
        if not k.startswith("text_model."):
            raise SystemExit(f"text encoder key {k} lacks the text_model. prefix")
        put(CLIP_PREFIX + k, ("text_encoder", k))
    return out


def ldm_schedule(sched: dict) -> dict[str, np.ndarray]:
    """The DDPM buffers of ldm's LatentDiffusion.register_schedule (the ones SD 1.x checkpoints carry), f32."""
    assert sched["beta_schedule"] == "scaled_linear"
    n = sched["num_train_timesteps"]
    betas = np.linspace(sched["beta_start"] ** 0.5, sched["beta_end"] ** 0.5, n, dtype=np.float64) ** 2
    alphas_cumprod = np.cumprod(1.0 - betas)
    alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
    return {
        k: v.astype(np.float32)
        for k, v in {
            "betas": betas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
        }.items()
    }


def check_with_diffusers(compvis: dict, unet: dict, vae: dict, text: dict, unet_cfg: dict, vae_cfg: dict,
                         exact: bool) -> None:
    """diffusers' own CompVis -> diffusers conversion must give back `unet`, `vae` and `text` exactly."""
    ckpt = {
        k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v for k, v in compvis.items()
    }
    got = {
        "unet": convert_ldm_unet_checkpoint(ckpt, unet_cfg),
        "vae": convert_ldm_vae_checkpoint(ckpt, vae_cfg),
        "text_encoder": {
            k: v for k, v in convert_ldm_clip_checkpoint(ckpt).items() if k != "text_model.embeddings.position_ids"
        },
    }
    for name, want in (("unet", unet), ("vae", vae), ("text_encoder", text)):
        g = got[name]
        if set(g) != set(want):
            extra, missing = sorted(set(g) - set(want)), sorted(set(want) - set(g))
            raise SystemExit(f"diffusers' converter disagrees on {name} keys: extra {extra[:5]}, missing {missing[:5]}")
        for k, w in want.items():
            gv = g[k]
            if exact:
                gv = gv.numpy()
                if gv.dtype != w.dtype or gv.shape != w.shape or gv.tobytes() != w.tobytes():
                    raise SystemExit(f"diffusers' converter gives another {name} tensor {k}")
            elif tuple(gv.shape) != tuple(w):
                raise SystemExit(f"diffusers' converter gives {name} {k} shape {tuple(gv.shape)}, expected {w}")


def tiny() -> None:
    unet_cfg = read_json(SRC / "unet/config.json")
    vae_cfg = read_json(SRC / "vae/config.json")
    sched = read_json(SRC / "scheduler/scheduler_config.json")
    unet = load_file(str(SRC / "unet/diffusion_pytorch_model.safetensors"))
    vae = load_file(str(SRC / "vae/diffusion_pytorch_model.safetensors"))
    text = load_file(str(SRC / "text_encoder/model.safetensors"))
    src = {"unet": unet, "vae": vae, "text_encoder": text}
    names = to_compvis(unet, vae, text, unet_cfg, vae_cfg)
    compvis: dict[str, np.ndarray] = {}
    for cv, (comp, key) in names.items():
        t = src[comp][key]
        if comp == "vae" and is_vae_attention_weight(cv):
            t = t.reshape(*t.shape, 1, 1)  # diffusers' linear [C, C] is CompVis' 1x1 conv [C, C, 1, 1]
        compvis[cv] = t
    check_with_diffusers(compvis, unet, vae, text, unet_cfg, vae_cfg, exact=True)

    # Entries real SD 1.x checkpoints have beside the three models; the converter skips them knowingly.
    compvis.update(ldm_schedule(sched))
    compvis["model_ema.decay"] = np.array(0.9999, dtype=np.float32)
    compvis["model_ema.num_updates"] = np.array(470000, dtype=np.int32)
    # EMA copies are stored flattened (dots removed), e.g. model_ema.diffusion_modeltime_embed0bias.
    compvis["model_ema.diffusion_modeltime_embed0bias"] = unet["time_embedding.linear_1.bias"].copy()
    compvis[CLIP_PREFIX + "text_model.embeddings.position_ids"] = np.arange(77, dtype=np.int64)[None, :]

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    save_file(compvis, str(OUT))
    print(f"{OUT.relative_to(REPO)}: {len(compvis)} tensors ({len(names)} mapped), {OUT.stat().st_size} bytes")


def meta_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def sd15_keys() -> None:
    unet_cfg = read_json(SD15_CONFIGS / "unet_config.json")
    vae_cfg = read_json(SD15_CONFIGS / "vae_config.json")
    text_cfg = read_json(SD15_CONFIGS / "text_encoder_config.json")
    with torch.device("meta"):
        unet = meta_shapes(UNet2DConditionModel.from_config(unet_cfg))
        vae = meta_shapes(AutoencoderKL.from_config(vae_cfg))
        te = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in text_cfg.items() if not k.startswith("_")}))
        text_raw = meta_shapes(te)
    text = {}
    for k, v in text_raw.items():
        if k.endswith("position_ids"):
            continue
        text[k if k.startswith("text_model.") else "text_model." + k] = v
    names = to_compvis(unet, vae, text, unet_cfg, vae_cfg)
    compvis = {}
    for cv, (comp, key) in names.items():
        shape = {"unet": unet, "vae": vae, "text_encoder": text}[comp][key]
        if comp == "vae" and is_vae_attention_weight(cv):
            shape = (*shape, 1, 1)
        compvis[cv] = torch.empty(shape, device="meta")
    check_with_diffusers(compvis, unet, vae, text, unet_cfg, vae_cfg, exact=False)
    # diffusers' model-type detection key for SD 1.x (single_file_utils.CHECKPOINT_KEY_NAMES["v1"]) is among them.
    assert "model.diffusion_model.output_blocks.11.0.skip_connection.weight" in names
    table = {comp: [] for comp in ("unet", "vae", "text_encoder")}
    for cv in sorted(names):
        comp, key = names[cv]
        table[comp].append([cv, key, list({"unet": unet, "vae": vae, "text_encoder": text}[comp][key])])
    blocks = [
        f'  "{comp}": [\n' + ",\n".join("    " + json.dumps(row) for row in rows) + "\n  ]"
        for comp, rows in table.items()
    ]
    text_out = "{\n" + ",\n".join(blocks) + "\n}\n"
    SD15_KEYS.write_text(text_out)
    counts = ", ".join(f"{c} {len(r)}" for c, r in table.items())
    print(f"{SD15_KEYS.relative_to(REPO)}: {counts}")


def main() -> None:
    torch.set_num_threads(1)
    tiny()
    sd15_keys()


if __name__ == "__main__":
    sys.exit(main())
