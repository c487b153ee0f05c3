#!/usr/bin/env python3
"""Tiny pixel-cascade test model and diffusers reference tensors for p2p-wgpu.

What it makes (deterministic from fixed seeds):

- tests/fixtures/cascade-tiny/   a `P2PCascadePipeline` folder in the engine's cascade layout, random weights:
    model_index.json             {"_class_name": "P2PCascadePipeline", text_encoder, tokenizer, unet, scheduler,
                                  sr_unet, sr_scheduler, "sr_noise_level", "sr_guidance_scale"}
    text_encoder/                CLIPTextModel, 2 layers x 32 wide, 4 heads, quick_gelu, the full 49408 vocab,
                                 max_position_embeddings 20 (a short text length, as the trained default model)
    tokenizer/                   the CLIP BPE files (vocab.json + merges.txt, byte-identical to sd1-tiny's)
    unet/                        pixel-space base UNet2DConditionModel: 3 -> 3 channels, 8x8 pixels
    scheduler/                   PNDM (skip_prk_steps, linear betas)
    sr_unet/                     super-resolution UNet2DConditionModel: 6 -> 3 channels ([x_t, upsampled base
                                 after noise augmentation]), 32x32 pixels, class_embed_type "timestep"
    sr_scheduler/                DDIM (linear betas, clip_sample)
  Every weight file is stored as float16 (the shipped default model is fp16 too); the references are computed in
  float32 from the folder loaded back, i.e. from exactly the stored (f16-representable) values.
- tests/fixtures/reference/cascade-*.safetensors and reference/cascade-manifest.json:
    cascade-base_unet_call       one base UNet call (2 prompts, t = 501)
    cascade-sr_unet_call         one SR UNet call with class labels (a different noise level per row, t = 301)
    cascade-t2i                  a whole cascade text-to-image run of 2 prompts from given noises: base 4 steps
                                 PNDM + SR 4 steps DDIM, both with classifier-free guidance.

There is no diffusers pipeline for this layout (IFSuperResolutionPipeline differs: align_corners=True
upsampling, a learned-variance output split, its own noise-level handling, a T5 encoder), so the cascade run below
is an explicit loop written here on diffusers' own UNet2DConditionModel, PNDMScheduler, DDIMScheduler and torch's
F.interpolate. It is the engine's semantics (src/models/cascade.rs), step by step:

  1. text: CLIP last_hidden_state of [negative x B, prompts] (padding to max_position_embeddings);
  2. base: x = base_noise (init_noise_sigma 1, shared by every prompt); per timestep the UNet on [x, x] with the
     text batch, u + g (c - u), scheduler.step;
  3. base image = clamp(x, -1, 1); upsampled = F.interpolate(image, scale_factor=4, mode="bilinear",
     align_corners=False);
  4. augmented = sr_scheduler.add_noise(upsampled, aug_noise, sr_noise_level) (one aug noise shared by all rows);
  5. SR: y = sr_noise (shared); per timestep the SR UNet on cat([y, augmented], dim=1) doubled for CFG, text of
     ["" x B, prompts] (uncond = the empty prompt), class_labels = sr_noise_level for every row;
     u + sr_guidance_scale (c - u), sr_scheduler.step;
  6. images = (y / 2 + 0.5).clamp(0, 1).

This is our own code (p2p-wgpu project). Pinned environment: weights-tools/requirements.txt (torch 2.15.0 CPU,
diffusers 0.42.1, transformers 5.23.0). Regenerate from the repository root (a few seconds, byte-identical):

    weights-tools/.venv/bin/python weights-tools/make_cascade_fixtures.py

Random init as make_sd_fixtures.py: constant-initialised parameters get `c + 0.1 randn`, and cross-attention
(attn2) to_q / to_k weights are scaled by 6 so that the maps are sharp (the sharpness of the base UNet call is in
the manifest).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import diffusers
import safetensors
import transformers
from diffusers import DDIMScheduler, PNDMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_sd_fixtures import (  # noqa: E402
    ATTN_SHARPEN,
    attention_stats,
    find_tokenizer_src,
    perturb_constant_params,
    set_determinism,
    sharpen_cross_attention,
    write_json,
    write_tokenizer,
)

REPO = Path(__file__).resolve().parents[1]
REGENERATE = "weights-tools/.venv/bin/python weights-tools/make_cascade_fixtures.py"
NAME = "cascade-tiny"

MAX_LEN = 20
BASE_SIZE = 8
SR_SCALE = 4
SR_NOISE_LEVEL = 100
SR_GUIDANCE = 4.0
T2I_PROMPTS = ["a red circle on a white background", "a big blue square and a green star"]
T2I_NEGATIVE = ""
BASE_STEPS = 4
SR_STEPS = 4
GUIDANCE = 7.5
SEEDS = {"text_encoder": 4001, "unet": 4002, "sr_unet": 4003}
REF_SEED = 4100

BASE_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": diffusers.__version__,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
}
SR_SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "_diffusers_version": diffusers.__version__,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "clip_sample": True,
    "clip_sample_range": 1.0,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "thresholding": False,
    "trained_betas": None,
}


def text_config() -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=MAX_LEN, layer_norm_eps=1e-5,
                          projection_dim=32, hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407,
                          pad_token_id=49407)


def base_unet_config() -> dict:
    # SD 1.x-like: attention_head_dim holds the head count (2) -> head dims 16 (32 channels) and 32 (mid, 64).
    return dict(sample_size=BASE_SIZE, in_channels=3, out_channels=3, layers_per_block=1,
                block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, norm_num_groups=8,
                attention_head_dim=2, flip_sin_to_cos=True, freq_shift=0)


def sr_unet_config() -> dict:
    # Cross-attention only at the lower resolution (as cheap SR stages do), linear projections, 4 heads of 12.
    return dict(sample_size=BASE_SIZE * SR_SCALE, in_channels=6, out_channels=3, layers_per_block=1,
                block_out_channels=(32, 48), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, norm_num_groups=8,
                attention_head_dim=4, use_linear_projection=True, class_embed_type="timestep",
                flip_sin_to_cos=True, freq_shift=0)


def model_index() -> dict:
    return {
        "_class_name": "P2PCascadePipeline",
        "_diffusers_version": diffusers.__version__,
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "sr_unet": ["diffusers", "UNet2DConditionModel"],
        "sr_scheduler": ["diffusers", "DDIMScheduler"],
        "sr_noise_level": SR_NOISE_LEVEL,
        "sr_guidance_scale": SR_GUIDANCE,
    }


def to_f16_file(path: Path) -> None:
    """Rewrite a saved safetensors file with every tensor as float16 (rounded once, here)."""
    sd = load_file(str(path))
    save_file({k: v.to(torch.float16).contiguous() for k, v in sd.items()}, str(path), metadata={"format": "pt"})


def build_and_save(out: Path, tok_files: dict) -> dict:
    torch.manual_seed(SEEDS["text_encoder"])
    te = CLIPTextModel(text_config()).eval()
    torch.manual_seed(SEEDS["unet"])
    unet = UNet2DConditionModel(**base_unet_config()).eval()
    torch.manual_seed(SEEDS["sr_unet"])
    sr_unet = UNet2DConditionModel(**sr_unet_config()).eval()
    info = {"constant_params_perturbed": {}, "attn2_qk_weights_scaled": {}}
    for name, m in (("text_encoder", te), ("unet", unet), ("sr_unet", sr_unet)):
        info["constant_params_perturbed"][name] = perturb_constant_params(
            m, torch.Generator().manual_seed(SEEDS[name] + 7))
    for name, m in (("unet", unet), ("sr_unet", sr_unet)):
        info["attn2_qk_weights_scaled"][name] = len(sharpen_cross_attention(m, ATTN_SHARPEN))

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    write_json(out / "model_index.json", model_index())
    te.save_pretrained(str(out / "text_encoder"), safe_serialization=True)
    te_path = out / "text_encoder" / "model.safetensors"
    # Current transformers layout: keys without the `text_model.` prefix.
    sd = load_file(str(te_path))
    save_file({(k[len("text_model."):] if k.startswith("text_model.") else k): v.contiguous() for k, v in sd.items()},
              str(te_path), metadata={"format": "pt"})
    cfg = json.loads((out / "text_encoder" / "config.json").read_text())
    cfg["dtype"] = "float16"
    write_json(out / "text_encoder" / "config.json", cfg)
    to_f16_file(te_path)
    for name, m in (("unet", unet), ("sr_unet", sr_unet)):
        m.save_pretrained(str(out / name), safe_serialization=True)
        to_f16_file(out / name / "diffusion_pytorch_model.safetensors")
    write_tokenizer(out / "tokenizer", "transformers4", tok_files)
    for name, cfg in (("scheduler", BASE_SCHEDULER), ("sr_scheduler", SR_SCHEDULER)):
        (out / name).mkdir()
        write_json(out / name / "scheduler_config.json", cfg)
    return info


def load_folder(folder: Path):
    tok = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    te = CLIPTextModel.from_pretrained(str(folder / "text_encoder"), dtype=torch.float32).eval()
    unet = UNet2DConditionModel.from_pretrained(str(folder / "unet"), torch_dtype=torch.float32).eval()
    sr_unet = UNet2DConditionModel.from_pretrained(str(folder / "sr_unet"), torch_dtype=torch.float32).eval()
    # Exactly the stored values, in f32.
    for comp, m, f in (("text_encoder", te, "text_encoder/model.safetensors"),
                       ("unet", unet, "unet/diffusion_pytorch_model.safetensors"),
                       ("sr_unet", sr_unet, "sr_unet/diffusion_pytorch_model.safetensors")):
        stored = load_file(str(folder / f))
        got = m.state_dict()
        got = {(k[len("text_model."):] if k.startswith("text_model.") else k): v for k, v in got.items()}
        missing = sorted(set(got) - set(stored) - {"embeddings.position_ids"})
        assert not missing, f"{comp}: not stored: {missing[:5]}"
        for k, v in stored.items():
            assert v.dtype == torch.float16, (comp, k, v.dtype)
            assert got[k].dtype == torch.float32 and torch.equal(got[k], v.float()), f"{comp}: {k} differs"
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    return tok, te, unet, sr_unet


def randn(shape, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


@torch.no_grad()
def encode(tok, te, prompts):
    ids = tok(prompts, padding="max_length", max_length=MAX_LEN, truncation=True, return_tensors="pt").input_ids
    return ids, te(ids).last_hidden_state


@torch.no_grad()
def cascade(tok, te, unet, sr_unet, prompts, negative, base_noise, aug_noise, sr_noise, record: dict):
    """The cascade text-to-image loop (module docstring, steps 1-6); intermediate tensors go into `record`."""
    b = len(prompts)
    _, text = encode(tok, te, [negative] * b + prompts)
    sched = PNDMScheduler.from_config(BASE_SCHEDULER)
    sched.set_timesteps(BASE_STEPS)
    x = (base_noise * sched.init_noise_sigma).expand(b, -1, -1, -1).clone()
    base_ts = [int(t) for t in sched.timesteps]
    for t in sched.timesteps:
        out = unet(torch.cat([x, x]), t, encoder_hidden_states=text).sample
        u, c = out.chunk(2)
        x = sched.step(u + GUIDANCE * (c - u), t, x).prev_sample
    record["base_final"] = x
    image = x.clamp(-1, 1)
    up = F.interpolate(image, scale_factor=SR_SCALE, mode="bilinear", align_corners=False)
    record["upsampled"] = up
    sr_sched = DDIMScheduler.from_config(SR_SCHEDULER)
    level = torch.tensor([SR_NOISE_LEVEL] * b, dtype=torch.long)
    aug = sr_sched.add_noise(up, aug_noise.expand(b, -1, -1, -1), level)
    record["augmented"] = aug
    _, sr_text = encode(tok, te, [""] * b + prompts)
    sr_sched.set_timesteps(SR_STEPS)
    y = (sr_noise * sr_sched.init_noise_sigma).expand(b, -1, -1, -1).clone()
    labels = torch.full((2 * b,), float(SR_NOISE_LEVEL))
    sr_ts = [int(t) for t in sr_sched.timesteps]
    for t in sr_sched.timesteps:
        inp = torch.cat([y, aug], dim=1)
        out = sr_unet(torch.cat([inp, inp]), t, encoder_hidden_states=sr_text, class_labels=labels).sample
        u, c = out.chunk(2)
        y = sr_sched.step(u + SR_GUIDANCE * (c - u), t, y).prev_sample
    record["sr_final"] = y
    record["images"] = (y / 2 + 0.5).clamp(0, 1)
    return base_ts, sr_ts


class Refs:
    def __init__(self, out: Path):
        self.out = out
        self.entries = []

    def save(self, fname: str, tensors: dict, desc: dict, info: dict) -> None:
        tensors = {k: v.detach().float().contiguous() for k, v in tensors.items()}
        for k, v in tensors.items():
            assert torch.isfinite(v).all(), f"{fname}:{k} not finite"
        save_file(tensors, str(self.out / fname), metadata={"format": "pt"})
        meta = {k: {"dtype": "F32", "shape": list(v.shape), "desc": desc[k],
                    "std": round(float(v.double().std()) if v.numel() > 1 else 0.0, 6),
                    "max_abs": round(float(v.double().abs().max()), 6)} for k, v in tensors.items()}
        self.entries.append({"file": fname, **info, "tensors": meta})


@torch.no_grad()
def make_references(folder: Path, refs: Refs, info: dict) -> None:
    tok, te, unet, sr_unet = load_folder(folder)
    s = BASE_SIZE * SR_SCALE
    ids, ehs = encode(tok, te, T2I_PROMPTS)

    x = randn((2, 3, BASE_SIZE, BASE_SIZE), REF_SEED + 1)
    holder = {}

    def run():
        holder["out"] = unet(x, 501, encoder_hidden_states=ehs).sample

    info["base_cross_attention_sharpness_t501"] = attention_stats(unet, run, ids, tok.eos_token_id)
    refs.save("cascade-base_unet_call.safetensors",
              {"sample": x, "timestep": torch.tensor([501.0]), "encoder_hidden_states": ehs,
               "out": holder["out"]},
              {"sample": f"seeded randn (seed {REF_SEED + 1}), NCHW", "timestep": "the timestep",
               "encoder_hidden_states": "CLIP last_hidden_state of the 2 prompts",
               "out": "unet(sample, 501, encoder_hidden_states).sample"},
              {"kind": "base_unet_call", "prompts": T2I_PROMPTS, "timestep": 501})

    y = randn((2, 6, s, s), REF_SEED + 2)
    labels = torch.tensor([100.0, 250.0])
    out = sr_unet(y, 301, encoder_hidden_states=ehs, class_labels=labels).sample
    refs.save("cascade-sr_unet_call.safetensors",
              {"sample": y, "timestep": torch.tensor([301.0]), "class_labels": labels,
               "encoder_hidden_states": ehs, "out": out},
              {"sample": f"seeded randn (seed {REF_SEED + 2}), NCHW: channels 0-2 x_t, 3-5 the conditioning image",
               "timestep": "the timestep", "class_labels": "per-row noise-augmentation levels",
               "encoder_hidden_states": "CLIP last_hidden_state of the 2 prompts",
               "out": "sr_unet(sample, 301, encoder_hidden_states, class_labels=class_labels).sample"},
              {"kind": "sr_unet_call", "prompts": T2I_PROMPTS, "timestep": 301, "class_labels": [100, 250]})

    base_noise = randn((1, 3, BASE_SIZE, BASE_SIZE), REF_SEED + 3)
    aug_noise = randn((1, 3, s, s), REF_SEED + 4)
    sr_noise = randn((1, 3, s, s), REF_SEED + 5)
    rec = {}
    base_ts, sr_ts = cascade(tok, te, unet, sr_unet, T2I_PROMPTS, T2I_NEGATIVE, base_noise, aug_noise, sr_noise, rec)
    # Rows are independent: each prompt alone gives its row of the batch.
    for i, p in enumerate(T2I_PROMPTS):
        one = {}
        cascade(tok, te, unet, sr_unet, [p], T2I_NEGATIVE, base_noise, aug_noise, sr_noise, one)
        d = float((one["images"][0] - rec["images"][i]).abs().max())
        r = float((one["images"][0] - rec["images"][i]).norm() / rec["images"][i].norm())
        info.setdefault("row_alone_vs_batch", []).append({"max_abs": d, "rel_l2": r})
        assert d < 5e-4 and r < 2e-5, f"row {i} alone differs from its batch row by {d} (relative L2 {r})"
    refs.save("cascade-t2i.safetensors",
              {"base_noise": base_noise, "aug_noise": aug_noise, "sr_noise": sr_noise, **rec},
              {"base_noise": f"base initial noise [1,3,h,w] (seeded randn, seed {REF_SEED + 3}), shared by rows",
               "aug_noise": f"noise of the SR noise augmentation [1,3,H,W] (seed {REF_SEED + 4}), shared",
               "sr_noise": f"SR initial noise [1,3,H,W] (seed {REF_SEED + 5}), shared",
               "base_final": "base stage output after the last PNDM step (before clamping)",
               "upsampled": "F.interpolate(base_final.clamp(-1, 1), scale_factor=4, mode='bilinear', "
                            "align_corners=False)",
               "augmented": "DDIMScheduler.add_noise(upsampled, aug_noise, sr_noise_level)",
               "sr_final": "SR stage output after the last DDIM step",
               "images": "(sr_final / 2 + 0.5).clamp(0, 1)"},
              {"kind": "cascade_t2i", "prompts": T2I_PROMPTS, "negative_prompt": T2I_NEGATIVE,
               "base_steps": BASE_STEPS, "base_scheduler": "PNDMScheduler", "base_timesteps": base_ts,
               "guidance_scale": GUIDANCE, "sr_steps": SR_STEPS, "sr_scheduler": "DDIMScheduler",
               "sr_timesteps": sr_ts, "sr_guidance_scale": SR_GUIDANCE, "sr_noise_level": SR_NOISE_LEVEL,
               "sr_negative_prompt": ""})


def folder_files(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fixtures", default=str(REPO / "tests" / "fixtures"), help="output root (tests/fixtures)")
    ap.add_argument("--tokenizer-src", default=None, help="folder with vocab.json, merges.txt, tokenizer.json")
    args = ap.parse_args()
    t0 = time.time()
    set_determinism()
    fixtures = Path(args.fixtures)
    tok_files = find_tokenizer_src(args.tokenizer_src, fixtures)
    folder = fixtures / NAME
    info = build_and_save(folder, tok_files)
    ref_dir = fixtures / "reference"
    ref_dir.mkdir(parents=True, exist_ok=True)
    for old in ref_dir.glob("cascade-*"):
        old.unlink()
    refs = Refs(ref_dir)
    make_references(folder, refs, info)
    info["files"] = folder_files(folder)
    info["total_bytes"] = sum(info["files"].values())
    manifest = {
        "format": 1,
        "generator": "weights-tools/make_cascade_fixtures.py",
        "regenerate": REGENERATE,
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__, "safetensors": safetensors.__version__,
                     "numpy": np.__version__},
        "model": {"path": f"tests/fixtures/{NAME}", "init_seeds": SEEDS, "reference_seed_base": REF_SEED,
                  "weights_dtype": "float16", "attn2_qk_scale": ATTN_SHARPEN, **info},
        "files": refs.entries,
    }
    write_json(ref_dir / "cascade-manifest.json", manifest)
    print(f"done in {time.time() - t0:.1f}s: {folder} ({info['total_bytes'] / 1e6:.2f} MB), "
          f"{len(refs.entries)} reference files; base attn2 sharpness "
          f"{info['base_cross_attention_sharpness_t501']['fraction_max_prob_over_0.3']}")


if __name__ == "__main__":
    main()
