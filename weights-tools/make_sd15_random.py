#!/usr/bin/env python3
"""An SD 1.5-shaped diffusers folder with random weights, for benchmarks (not for quality, not committed).

What it makes: a complete diffusers folder (model_index.json, unet/, text_encoder/, vae/, tokenizer/, scheduler/)
with Stable Diffusion 1.5's real configurations -- CLIP ViT-L/14 text encoder (12 layers x 768, quick_gelu), UNet
with block_out_channels (320, 640, 1280, 1280), attention_head_dim 8 (the head count), cross_attention_dim 768,
layers_per_block 2, sample_size 64; the SD VAE (128, 256, 512, 512); the PNDM scheduler; the CLIP tokenizer in the
transformers 4.x-era layout (vocab.json + merges.txt, text-encoder keys prefixed `text_model.`) -- and seeded random
weights, in fp16 (default) or f32. About 2 GB in fp16, 4 GB in f32; do not commit it.

    weights-tools/.venv/bin/python weights-tools/make_sd15_random.py [OUT] [--dtype fp16|f32] [--as-variant]
        [--components unet,text_encoder,vae,tokenizer,scheduler] [--verify]

OUT defaults to target/sd15-random. With --as-variant, fp16 weights go to `*.fp16.safetensors` (load the folder with
`--variant fp16`); otherwise they use the plain file names.

Weights are streamed to disk tensor by tensor (shapes taken from models built on the meta device), so memory stays
small. Values: linear/conv weights ~ N(0, 1/fan_in), biases ~ N(0, 0.02^2), norm weights 1 + N(0, 0.05^2), norm
biases N(0, 0.05^2), token embedding N(0, 0.02^2), position embedding N(0, 0.01^2); each tensor from its own
torch.Generator seeded with (seed, tensor index), so the output is deterministic.

This is our own code (p2p-wgpu project). Pinned environment (weights-tools/requirements.txt): torch 2.15.0 (CPU),
diffusers 0.42.1, transformers 5.23.0, safetensors 0.8.0, numpy 2.4.6. The test fixtures themselves are made by
`weights-tools/.venv/bin/python weights-tools/make_sd_fixtures.py` (this script is not part of that).
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_sd_fixtures import (  # noqa: E402  (shared configs and tokenizer helpers)
    SD15_SCHEDULER,
    find_tokenizer_src,
    write_json,
    write_tokenizer,
)

import diffusers  # noqa: E402
from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COMPONENTS = ["scheduler", "tokenizer", "text_encoder", "vae", "unet"]

# openai/clip-vit-large-patch14 text config as shipped in SD 1.5's text_encoder/config.json
# (including its legacy bos 0 / eos 2 / pad 1 ids).
SD15_TEXT = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=768,
    attention_dropout=0.0, dropout=0.0, initializer_factor=1.0, initializer_range=0.02,
    bos_token_id=0, eos_token_id=2, pad_token_id=1,
)
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1,
    act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=768, attention_head_dim=8,
)
SD15_VAE = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    act_fn="silu", latent_channels=4, norm_num_groups=32, sample_size=512, scaling_factor=0.18215,
)
MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": diffusers.__version__,
    "feature_extractor": [None, None],
    "image_encoder": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
ST_DTYPE = {torch.float16: "F16", torch.float32: "F32"}
NORMS = (torch.nn.GroupNorm, torch.nn.LayerNorm)


def tensor_plan(model: torch.nn.Module, prefix: str = "") -> list[tuple[str, tuple, str, int]]:
    """(key, shape, role, fan_in) for every state-dict tensor of a meta-device model."""
    owners = {}
    for mname, mod in model.named_modules():
        for pname, _ in mod.named_parameters(recurse=False):
            owners[f"{mname}.{pname}" if mname else pname] = mod
    plan = []
    for key, t in model.state_dict().items():
        mod = owners.get(key)
        shape = tuple(t.shape)
        leaf = key.rsplit(".", 1)[-1]
        if isinstance(mod, NORMS):
            role = "norm_weight" if leaf == "weight" else "norm_bias"
        elif isinstance(mod, torch.nn.Embedding):
            role = "token_embedding" if "token" in key else "position_embedding"
        elif leaf == "bias":
            role = "bias"
        else:
            role = "weight"
        fan_in = int(math.prod(shape[1:])) if len(shape) > 1 else 1
        plan.append((prefix + key, shape, role, fan_in))
    return sorted(plan)


def values(shape, role: str, fan_in: int, gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(shape, generator=gen, dtype=torch.float32)
    if role == "weight":
        return x.mul_(1.0 / math.sqrt(fan_in))
    if role == "norm_weight":
        return x.mul_(0.05).add_(1.0)
    if role == "norm_bias":
        return x.mul_(0.05)
    if role == "token_embedding":
        return x.mul_(0.02)
    if role == "position_embedding":
        return x.mul_(0.01)
    return x.mul_(0.02)  # bias


def stream_safetensors(path: Path, plan, dtype: torch.dtype, seed: int) -> int:
    """Write a safetensors file tensor by tensor; returns the byte count."""
    itemsize = torch.tensor([], dtype=dtype).element_size()
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for key, shape, _, _ in plan:
        n = int(math.prod(shape)) * itemsize
        header[key] = {"dtype": ST_DTYPE[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * (-len(hjson) % 8)
    tmp = path.with_suffix(path.suffix + ".partial")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for i, (key, shape, role, fan_in) in enumerate(plan):
            gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
            f.write(values(shape, role, fan_in, gen).to(dtype).contiguous().numpy().tobytes())
    tmp.rename(path)
    return 8 + len(hjson) + offset


def check_file(path: Path, plan, dtype: torch.dtype) -> None:
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        assert keys == {p[0] for p in plan}, f"{path}: key mismatch"
        for key, shape, _, _ in plan[:: max(1, len(plan) // 16)]:
            t = f.get_tensor(key)
            assert tuple(t.shape) == shape and t.dtype == dtype and torch.isfinite(t).all(), key


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", default=str(REPO / "target" / "sd15-random"))
    ap.add_argument("--dtype", choices=["fp16", "f32"], default="fp16")
    ap.add_argument("--as-variant", action="store_true", help="name fp16 files *.fp16.safetensors")
    ap.add_argument("--components", default=",".join(COMPONENTS), help=f"comma list from {COMPONENTS}")
    ap.add_argument("--te-layout", choices=["transformers4", "current"], default="transformers4",
                    help="text-encoder keys prefixed text_model. (hub SD 1.5) or not (current transformers)")
    ap.add_argument("--seed", type=int, default=1500)
    ap.add_argument("--tokenizer-src", default=None, help="folder with vocab.json, merges.txt, tokenizer.json")
    ap.add_argument("--verify", action="store_true", help="load each written model back with diffusers/transformers")
    args = ap.parse_args()

    dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    if args.as_variant and dtype != torch.float16:
        sys.exit("error: --as-variant needs --dtype fp16")
    comps = [c.strip() for c in args.components.split(",") if c.strip()]
    bad = [c for c in comps if c not in COMPONENTS]
    if bad:
        sys.exit(f"error: unknown components {bad}; choose from {COMPONENTS}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "model_index.json", MODEL_INDEX)
    suffix = ".fp16.safetensors" if args.as_variant else ".safetensors"
    t0 = time.time()

    for ci, comp in enumerate(COMPONENTS):
        if comp not in comps:
            continue
        t1 = time.time()
        folder = out / comp
        folder.mkdir(exist_ok=True)
        if comp == "scheduler":
            write_json(folder / "scheduler_config.json", SD15_SCHEDULER)
        elif comp == "tokenizer":
            fixtures = REPO / "tests" / "fixtures"
            write_tokenizer(folder, "transformers4", find_tokenizer_src(args.tokenizer_src, fixtures))
        else:
            prefix = ""
            with torch.device("meta"):
                if comp == "text_encoder":
                    cfg = CLIPTextConfig(**SD15_TEXT)
                    model = CLIPTextModel(cfg)
                elif comp == "vae":
                    model = AutoencoderKL(**SD15_VAE)
                else:
                    model = UNet2DConditionModel(**SD15_UNET)
            if comp == "text_encoder":
                cfg.save_pretrained(str(folder))
                prefix = "text_model." if args.te_layout == "transformers4" else ""
                plan = tensor_plan(model, prefix)
                fname = "model" + suffix
            else:
                model.save_config(str(folder))
                plan = tensor_plan(model)
                fname = "diffusion_pytorch_model" + suffix
            nbytes = stream_safetensors(folder / fname, plan, dtype, args.seed + ci)
            check_file(folder / fname, plan, dtype)
            if args.verify:
                variant = "fp16" if args.as_variant else None
                cls = {"text_encoder": CLIPTextModel, "vae": AutoencoderKL, "unet": UNet2DConditionModel}[comp]
                m = cls.from_pretrained(str(out), subfolder=comp, variant=variant, dtype=dtype)
                got = {(("text_model." + k) if prefix and comp == "text_encoder" else k) for k in m.state_dict()}
                assert got == {p[0] for p in plan}, f"{comp}: loaded keys differ from the written ones"
                del m
            print(f"{comp}: {len(plan)} tensors, {nbytes / 2**20:.1f} MiB, {time.time() - t1:.1f}s", flush=True)
            continue
        print(f"{comp}: written, {time.time() - t1:.1f}s", flush=True)
    print(f"done in {time.time() - t0:.1f}s: {out}")


if __name__ == "__main__":
    main()
