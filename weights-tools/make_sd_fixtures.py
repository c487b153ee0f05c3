#!/usr/bin/env python3
"""Tiny Stable Diffusion test models and diffusers reference tensors for p2p-wgpu.

What it makes (all under tests/fixtures/, all deterministic from fixed seeds):

- tests/fixtures/sd1-tiny/   an SD 1.x-structured diffusers folder with random weights, written in the
                             transformers 4.x-era layout (text-encoder keys prefixed `text_model.`, tokenizer as
                             vocab.json + merges.txt), plus `unet/diffusion_pytorch_model.fp16.safetensors`;
- tests/fixtures/sd2-tiny/   an SD 2.x-structured folder (linear projections, upcast attention, v-prediction,
                             per-block head counts) in the current layout (no key prefix, tokenizer.json, pad "!");
- tests/fixtures/reference/  diffusers/transformers outputs of those folders (text encoder, one UNet call, VAE
                             decode, whole text-to-image runs from given initial latents), f32 safetensors, and
                             reference/manifest.json, which describes every file and tensor.

This is our own code (p2p-wgpu project), not a copy of any upstream script. The numbers it writes are the pinned
libraries' own: models are loaded back from the written folders and run through diffusers' StableDiffusionPipeline.

Pinned environment (weights-tools/requirements.txt): torch 2.15.0 (CPU is enough), diffusers 0.42.1,
transformers 5.23.0, safetensors 0.8.0, tokenizers 0.23.3, numpy 2.4.6.

Regenerate everything with one command, from the repository root:

    weights-tools/.venv/bin/python weights-tools/make_sd_fixtures.py

The CLIP BPE files come from --tokenizer-src, by default the crate's own copies (assets/clip-tokenizer/vocab.json,
merges.txt and tests/fixtures/tokenizer/tokenizer.json; the same bytes as /work/shared/clip-tokenizer).

Random init, then two deliberate changes (both seeded):
- every parameter that the libraries initialise to a constant (norm weights = 1, norm/linear biases = 0) gets
  seeded noise (`c + 0.1 * randn`), so a loader that swaps or ignores weight/bias is caught;
- every UNet cross-attention (attn2) `to_q` and `to_k` weight is scaled by 6 (ATTN_SHARPEN), so the attention maps
  are far from uniform (without it, random init gives nearly uniform maps over the 77 tokens and attention-map
  edits would not matter). With 4, only ~20-27% of query rows had a max probability over 0.3; with 6, ~45-55% do.
  The script measures the sharpness at the t=501 UNet call and records it in the manifest (models.*.
  cross_attention_sharpness_t501), including where the largest probability lands (BOS, word tokens, EOS/padding).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import diffusers
import safetensors
import tokenizers
import transformers
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

REPO = Path(__file__).resolve().parents[1]
REGENERATE = "weights-tools/.venv/bin/python weights-tools/make_sd_fixtures.py"

ATTN_SHARPEN = 6.0
CONST_NOISE = 0.1

TE_PROMPTS = ["a photo of a cat", "a red bicycle on a hill", ""]
T2I_PROMPT = "a red bicycle on a hill"
T2I_NEGATIVE = ""
T2I_STEPS = 4
T2I_GUIDANCE = 7.5
UNET_TIMESTEPS = [501, 21]

# SD 1.5's scheduler/scheduler_config.json (PNDM), including the `clip_sample: false` that PNDM ignores but
# DDIMScheduler.from_config picks up.
SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": diffusers.__version__,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
}

# SD 2.1's scheduler/scheduler_config.json (DDIM, v-prediction).
SD21_SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "_diffusers_version": diffusers.__version__,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
}

ADDED_TOKEN = {"lstrip": False, "normalized": True, "rstrip": False, "single_word": False}


def added(content: str, typed: bool) -> dict:
    d = {"content": content, **ADDED_TOKEN}
    return {"__type": "AddedToken", **d} if typed else d


# transformers 4.x-era tokenizer files, as on the SD 1.x model hubs (slow-tokenizer format).
SD1_TOKENIZER_CONFIG = {
    "add_prefix_space": False,
    "bos_token": added("<|startoftext|>", True),
    "do_lower_case": True,
    "eos_token": added("<|endoftext|>", True),
    "errors": "replace",
    "model_max_length": 77,
    "pad_token": "<|endoftext|>",
    "special_tokens_map_file": "./special_tokens_map.json",
    "tokenizer_class": "CLIPTokenizer",
    "unk_token": added("<|endoftext|>", True),
}
SD1_SPECIAL_TOKENS_MAP = {
    "bos_token": added("<|startoftext|>", False),
    "eos_token": added("<|endoftext|>", False),
    "pad_token": "<|endoftext|>",
    "unk_token": added("<|endoftext|>", False),
}
# What transformers 5 writes for a CLIPTokenizer with pad "!" (SD 2.x) next to tokenizer.json.
SD2_TOKENIZER_CONFIG = {
    "backend": "tokenizers",
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "model_max_length": 77,
    "pad_token": "!",
    "tokenizer_class": "CLIPTokenizer",
    "unk_token": "<|endoftext|>",
}


# --------------------------------------------------------------------------------------------------------------
# model specs


def text_config(kind: str) -> CLIPTextConfig:
    common = dict(
        vocab_size=49408,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        layer_norm_eps=1e-5,
        projection_dim=32,
    )
    if kind == "sd1":
        return CLIPTextConfig(hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
                              **common)
    # SD 2.1's text_encoder/config.json carries the legacy ids bos 0 / pad 1 / eos 2 (they only affect the pooled
    # output, never last_hidden_state); the pad token for prompts comes from the tokenizer config ("!" = id 0).
    return CLIPTextConfig(hidden_act="gelu", bos_token_id=0, eos_token_id=2, pad_token_id=1, **common)


def unet_config(kind: str) -> dict:
    cfg = dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=8,
        flip_sin_to_cos=True,
        freq_shift=0,
    )
    if kind == "sd1":
        # SD 1.x quirk: attention_head_dim is the head count (num_attention_heads unset) -> head dims 16 and 32.
        cfg.update(attention_head_dim=2)
    else:
        # per-block head counts (down0/up1: 2 heads of 16; mid: 4 heads of 16)
        cfg.update(attention_head_dim=(2, 4), use_linear_projection=True, upcast_attention=True)
    return cfg


def vae_config() -> dict:
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
        scaling_factor=0.18215,
    )


# Real SD 2.x reuses the SD 1.x VAE (same kl-f8 architecture and weights), so sd2-tiny gets the same VAE seed: its
# vae/ files are byte-identical to sd1-tiny's, and git stores them once.
MODELS = {
    "sd1-tiny": dict(kind="sd1", seed=1001, layout="transformers4", scheduler=SD15_SCHEDULER,
                     component_seeds={"text_encoder": 1001, "unet": 1002, "vae": 1003}),
    "sd2-tiny": dict(kind="sd2", seed=2002, layout="current", scheduler=SD21_SCHEDULER,
                     component_seeds={"text_encoder": 2002, "unet": 2003, "vae": 1003}),
}


# --------------------------------------------------------------------------------------------------------------
# helpers


def set_determinism() -> None:
    torch.use_deterministic_algorithms(True)
    torch.backends.mkldnn.deterministic = True  # harmless where unused
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)


@torch.no_grad()
def perturb_constant_params(model: torch.nn.Module, gen: torch.Generator) -> int:
    """Give every constant-initialised parameter (norm weights, zero biases) seeded noise."""
    n = 0
    for _, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        flat = p.detach().reshape(-1)
        if flat.numel() > 0 and bool(torch.all(flat == flat[0])):
            p.add_(CONST_NOISE * torch.randn(p.shape, generator=gen))
            n += 1
    return n


@torch.no_grad()
def sharpen_cross_attention(unet: UNet2DConditionModel, factor: float) -> list[str]:
    names = []
    for name, p in unet.named_parameters():
        if ".attn2.to_q." in name or ".attn2.to_k." in name:
            if name.endswith(".weight"):
                p.mul_(factor)
                names.append(name)
    return names


def build_models(spec: dict):
    """Each component has its own init seed; its constant parameters get noise from a generator seeded seed + 7."""
    seeds = spec["component_seeds"]
    torch.manual_seed(seeds["text_encoder"])
    text_encoder = CLIPTextModel(text_config(spec["kind"])).eval()
    torch.manual_seed(seeds["unet"])
    unet = UNet2DConditionModel(**unet_config(spec["kind"])).eval()
    torch.manual_seed(seeds["vae"])
    vae = AutoencoderKL(**vae_config()).eval()
    perturbed = {
        name: perturb_constant_params(model, torch.Generator().manual_seed(seeds[name] + 7))
        for name, model in (("text_encoder", text_encoder), ("unet", unet), ("vae", vae))
    }
    sharpened = sharpen_cross_attention(unet, ATTN_SHARPEN)
    return text_encoder, unet, vae, perturbed, sharpened


def find_tokenizer_src(arg: str | None, fixtures: Path) -> dict[str, bytes]:
    """Read vocab.json, merges.txt and tokenizer.json into memory (the fixture folders may be the source).

    Default: the crate's own copies (assets/clip-tokenizer/{vocab.json,merges.txt} and
    tests/fixtures/tokenizer/tokenizer.json), else $P2P_CLIP_TOKENIZER or /work/shared/clip-tokenizer (the same
    files), else the copies already in tests/fixtures/sd{1,2}-tiny/tokenizer/.
    """
    names = ["vocab.json", "merges.txt", "tokenizer.json"]
    sets = []
    if arg:
        sets.append({n: Path(arg) / n for n in names})
    else:
        sets.append({"vocab.json": REPO / "assets/clip-tokenizer/vocab.json",
                     "merges.txt": REPO / "assets/clip-tokenizer/merges.txt",
                     "tokenizer.json": REPO / "tests/fixtures/tokenizer/tokenizer.json"})
        for d in (os.environ.get("P2P_CLIP_TOKENIZER"), "/work/shared/clip-tokenizer"):
            if d:
                sets.append({n: Path(d) / n for n in names})
        sets.append({"vocab.json": fixtures / "sd1-tiny/tokenizer/vocab.json",
                     "merges.txt": fixtures / "sd1-tiny/tokenizer/merges.txt",
                     "tokenizer.json": fixtures / "sd2-tiny/tokenizer/tokenizer.json"})
    for files in sets:
        if all(p.is_file() for p in files.values()):
            return {n: p.read_bytes() for n, p in files.items()}
    sys.exit(f"error: no CLIP tokenizer files (vocab.json, merges.txt, tokenizer.json) in "
             f"{[str(next(iter(s.values())).parent) for s in sets]}")


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_tokenizer(folder: Path, layout: str, tok_files: dict[str, bytes]) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if layout == "transformers4":
        (folder / "vocab.json").write_bytes(tok_files["vocab.json"])
        (folder / "merges.txt").write_bytes(tok_files["merges.txt"])
        write_json(folder / "tokenizer_config.json", SD1_TOKENIZER_CONFIG)
        write_json(folder / "special_tokens_map.json", SD1_SPECIAL_TOKENS_MAP)
    else:
        (folder / "tokenizer.json").write_bytes(tok_files["tokenizer.json"])
        write_json(folder / "tokenizer_config.json", SD2_TOKENIZER_CONFIG)


def rewrite_text_encoder(folder: Path, layout: str) -> str:
    """Give the text encoder the key layout of its generation. Returns what transformers wrote."""
    path = folder / "model.safetensors"
    sd = load_file(str(path))
    written = "prefixed text_model." if all(k.startswith("text_model.") for k in sd) else "no prefix"
    if layout == "transformers4":
        sd = {(k if k.startswith("text_model.") else "text_model." + k): v.contiguous() for k, v in sd.items()}
        # transformers 4.x wrote torch_dtype; 5.x writes dtype. Keep both readable: rename to the 4.x key.
        cfg = json.loads((folder / "config.json").read_text())
        if "dtype" in cfg and "torch_dtype" not in cfg:
            cfg["torch_dtype"] = cfg.pop("dtype")
        write_json(folder / "config.json", cfg)
    else:
        sd = {(k[len("text_model."):] if k.startswith("text_model.") else k): v.contiguous() for k, v in sd.items()}
    save_file(sd, str(path), metadata={"format": "pt"})
    return written


def save_pipeline_folder(name: str, spec: dict, out: Path, tok_files: dict[str, bytes]):
    text_encoder, unet, vae, perturbed, sharpened = build_models(spec)
    # A tokenizer object is needed to build the pipeline; the folder's tokenizer/ is rewritten by hand afterwards.
    tmp_tok = out.parent / f".{name}-tokenizer-tmp"
    write_tokenizer(tmp_tok, spec["layout"], tok_files)
    tokenizer = CLIPTokenizer.from_pretrained(str(tmp_tok))
    shutil.rmtree(tmp_tok)
    scheduler = (PNDMScheduler if spec["scheduler"]["_class_name"] == "PNDMScheduler" else DDIMScheduler).from_config(
        spec["scheduler"])
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    if out.exists():
        shutil.rmtree(out)
    pipe.save_pretrained(str(out), safe_serialization=True)
    # hand-written parts
    write_tokenizer(out / "tokenizer", spec["layout"], tok_files)
    for f in (out / "scheduler").iterdir():
        f.unlink()
    write_json(out / "scheduler" / "scheduler_config.json", spec["scheduler"])
    te_written = rewrite_text_encoder(out / "text_encoder", spec["layout"])
    if spec["kind"] == "sd1":
        sd = {k: v.detach().to(torch.float16).contiguous() for k, v in unet.state_dict().items()}
        save_file(sd, str(out / "unet" / "diffusion_pytorch_model.fp16.safetensors"), metadata={"format": "pt"})
    originals = {
        "text_encoder": {k: v.detach().clone() for k, v in text_encoder.state_dict().items()},
        "unet": {k: v.detach().clone() for k, v in unet.state_dict().items()},
        "vae": {k: v.detach().clone() for k, v in vae.state_dict().items()},
    }
    return originals, perturbed, sharpened, te_written


def load_pipeline(folder: Path) -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline.from_pretrained(
        str(folder), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        torch_dtype=torch.float32,
    )
    pipe.set_progress_bar_config(disable=True)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.eval()
    return pipe


def check_loaded(pipe, originals: dict, folder: Path, spec: dict) -> None:
    """The folder must load back bit-exactly (catches silently re-initialised tensors)."""
    for comp, orig in originals.items():
        got = getattr(pipe, comp).state_dict()
        missing = sorted(set(orig) - set(got))
        assert not missing, f"{folder}/{comp}: missing after reload {missing[:5]}"
        for k, v in orig.items():
            assert torch.equal(got[k].to(v.dtype), v), f"{folder}/{comp}: {k} differs after reload"
    tok = pipe.tokenizer
    ids = tok("a photo of a cat").input_ids
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407], ids
    want_pad = 49407 if spec["kind"] == "sd1" else 0
    assert tok.pad_token_id == want_pad, (tok.pad_token_id, want_pad)
    if spec["kind"] == "sd1":
        unet16 = UNet2DConditionModel.from_pretrained(str(folder), subfolder="unet", variant="fp16",
                                                      torch_dtype=torch.float16)
        for k, v in originals["unet"].items():
            assert torch.equal(unet16.state_dict()[k], v.to(torch.float16)), f"fp16 variant: {k}"
        del unet16


# --------------------------------------------------------------------------------------------------------------
# references


class Refs:
    def __init__(self, out: Path):
        self.out = out
        self.entries = []

    def save(self, fname: str, tensors: dict, desc: dict, info: dict) -> None:
        tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
        for k, v in tensors.items():
            assert v.dtype in (torch.float32, torch.int32), (k, v.dtype)
            assert torch.isfinite(v.float()).all(), f"{fname}:{k} not finite"
        # one metadata key only: safetensors writes metadata in hash-map order, which would make the bytes vary
        save_file(tensors, str(self.out / fname), metadata={"format": "pt"})
        meta = {}
        for k, v in tensors.items():
            f = v.double()
            meta[k] = {
                "dtype": "I32" if v.dtype == torch.int32 else "F32",
                "shape": list(v.shape),
                "desc": desc[k],
                "std": round(float(f.std()) if f.numel() > 1 else 0.0, 6),
                "max_abs": round(float(f.abs().max()), 6),
            }
        self.entries.append({"file": fname, **info, "tensors": meta})


def randn(shape, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


@torch.no_grad()
def tokenize(tok, prompts):
    return tok(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


@torch.no_grad()
def attention_stats(unet, run, ids: torch.Tensor, eos_id: int) -> dict:
    """Max softmax probability over text tokens, for every query row of every attn2 layer, during `run()`."""
    maxes, argmaxes, hooks = [], [], []
    # token classes per batch item: 0 = BOS, 1 = word tokens, 2 = EOS and padding
    cls = torch.full(ids.shape, 2)
    cls[:, 0] = 0
    for b in range(ids.shape[0]):
        eos = int((ids[b] == eos_id).nonzero()[0])
        cls[b, 1:eos] = 1

    def hook(mod, args, kwargs, _out):
        x = args[0] if args else kwargs["hidden_states"]
        ctx = kwargs.get("encoder_hidden_states")
        q, k = mod.to_q(x), mod.to_k(ctx)
        h = mod.heads
        b, n, _ = q.shape
        q = q.view(b, n, h, -1).transpose(1, 2)
        k = k.view(b, k.shape[1], h, -1).transpose(1, 2)
        p = torch.softmax((q @ k.transpose(-1, -2)) * mod.scale, dim=-1)
        mx = p.max(dim=-1)
        maxes.append(mx.values.reshape(-1))
        argmaxes.append(torch.gather(cls[:, None, None, :].expand(b, h, n, -1), 3, mx.indices[..., None]).reshape(-1))

    for name, mod in unet.named_modules():
        if name.endswith("attn2"):
            hooks.append(mod.register_forward_hook(hook, with_kwargs=True))
    try:
        run()
    finally:
        for hk in hooks:
            hk.remove()
    m, a = torch.cat(maxes), torch.cat(argmaxes)
    return {
        "layers": len(hooks),
        "rows": int(m.numel()),
        "mean_max_prob": round(float(m.mean()), 4),
        "median_max_prob": round(float(m.median()), 4),
        "fraction_max_prob_over_0.3": round(float((m > 0.3).float().mean()), 4),
        "uniform_prob": round(1 / 77, 4),
        "argmax_fraction": {k: round(float((a == i).float().mean()), 4)
                            for i, k in enumerate(["bos", "word_tokens", "eos_and_padding"])},
    }


@torch.no_grad()
def make_references(name: str, spec: dict, pipe, refs: Refs, model_info: dict) -> None:
    seed = spec["seed"]
    tok, te, unet, vae = pipe.tokenizer, pipe.text_encoder, pipe.unet, pipe.vae
    sf = vae.config.scaling_factor
    base = {"model": name, "model_path": f"tests/fixtures/{name}"}

    # --- text encoder
    ids = tokenize(tok, TE_PROMPTS)
    hidden = te(ids).last_hidden_state
    refs.save(
        f"{name}_text_encoder.safetensors",
        {"input_ids": ids.to(torch.int32), "last_hidden_state": hidden},
        {"input_ids": "CLIPTokenizer(prompts, padding='max_length', max_length=77, truncation=True)",
         "last_hidden_state": "CLIPTextModel(input_ids).last_hidden_state (after final_layer_norm, no attention mask)"},
        {**base, "kind": "text_encoder", "prompts": TE_PROMPTS, "pad_token": tok.pad_token,
         "pad_token_id": tok.pad_token_id},
    )

    # --- one UNet call per timestep
    latents = randn((2, 4, 8, 8), seed + 10)
    ehs = hidden[:2]
    for t in UNET_TIMESTEPS:
        holder = {}

        def run():
            holder["out"] = unet(latents, t, encoder_hidden_states=ehs).sample

        stats = attention_stats(unet, run, ids[:2], tok.eos_token_id)
        if t == UNET_TIMESTEPS[0]:
            model_info["cross_attention_sharpness_t501"] = stats
        refs.save(
            f"{name}_unet_call_t{t}.safetensors",
            {"latents": latents, "timestep": torch.tensor([float(t)]), "encoder_hidden_states": ehs,
             "noise_pred": holder["out"]},
            {"latents": f"seeded randn (torch.Generator seed {seed + 10}), the UNet input sample",
             "timestep": "the timestep (passed to diffusers as a Python int)",
             "encoder_hidden_states": "text encoder last_hidden_state for prompts 0 and 1",
             "noise_pred": f"unet(latents, {t}, encoder_hidden_states).sample, the raw model output "
                           f"({pipe.scheduler.config.prediction_type}); no guidance"},
            {**base, "kind": "unet_call", "timestep": t, "prompts": TE_PROMPTS[:2],
             "prediction_type": pipe.scheduler.config.prediction_type, "latents_seed": seed + 10},
        )

    # --- VAE decode
    z = randn((1, 4, 8, 8), seed + 20)
    dec_in = z / sf
    sample = vae.decode(dec_in).sample
    refs.save(
        f"{name}_vae_decode.safetensors",
        {"latents": z, "decoder_input": dec_in, "sample": sample, "image": (sample / 2 + 0.5).clamp(0, 1)},
        {"latents": f"seeded randn (seed {seed + 20}): latents in the pipeline's (scaled) space",
         "decoder_input": "latents / scaling_factor: what vae.decode() received",
         "sample": "vae.decode(decoder_input).sample, raw decoder output (before /2+0.5)",
         "image": "(sample / 2 + 0.5).clamp(0, 1)"},
        {**base, "kind": "vae_decode", "scaling_factor": sf, "latents_seed": seed + 20,
         "note": "The Rust side divides by scaling_factor itself: feed `latents` and compare with `sample`, or feed "
                 "`decoder_input` to the bare decoder."},
    )

    # --- VAE encode (for real-image editing): the posterior mean and its quant_conv moments
    img = randn((1, 3, 16, 16), seed + 25).clamp(-1, 1)
    dist = vae.encode(img).latent_dist
    refs.save(
        f"{name}_vae_encode.safetensors",
        {"image": img, "mean": dist.mean, "logvar": dist.logvar},
        {"image": f"seeded randn (seed {seed + 25}) clamped to [-1, 1]: an image in the VAE's input range",
         "mean": "vae.encode(image).latent_dist.mean (unscaled; multiply by scaling_factor for the pipeline)",
         "logvar": "vae.encode(image).latent_dist.logvar (clamped to [-30, 20] by diffusers)"},
        {**base, "kind": "vae_encode", "scaling_factor": sf, "image_seed": seed + 25},
    )

    # --- whole text-to-image runs
    init = randn((1, 4, 8, 8), seed + 30)
    variants = [("ddim", DDIMScheduler)]
    if spec["kind"] == "sd1":
        variants.append(("pndm", PNDMScheduler))
    for label, cls in variants:
        pipe.scheduler = cls.from_config(spec["scheduler"])
        step_latents, unet_outs = [], []

        def cb(_pipe, i, t, kw):
            step_latents.append(kw["latents"].detach().clone())
            return kw

        hk = unet.register_forward_hook(lambda _m, _a, out: unet_outs.append(out[0].detach().clone()))
        try:
            res = pipe(
                prompt=T2I_PROMPT, negative_prompt=T2I_NEGATIVE, num_inference_steps=T2I_STEPS,
                guidance_scale=T2I_GUIDANCE, latents=init.clone(), output_type="pt",
                callback_on_step_end=cb, callback_on_step_end_tensor_inputs=["latents"],
            )
        finally:
            hk.remove()
        image = res.images
        timesteps = [int(t) for t in pipe.scheduler.timesteps]
        neg_ids = tokenize(tok, [T2I_NEGATIVE, T2I_PROMPT])
        prompt_embeds = te(neg_ids).last_hidden_state
        sched_cfg = {k: v for k, v in dict(pipe.scheduler.config).items() if not k.startswith("_")}
        refs.save(
            f"{name}_t2i_{label}{T2I_STEPS}.safetensors",
            {"latents": init, "prompt_embeds": prompt_embeds, "timesteps": torch.tensor(timesteps, dtype=torch.int32),
             "unet_out": torch.stack(unet_outs), "step_latents": torch.stack(step_latents),
             "final_latents": step_latents[-1], "image": image.float()},
            {"latents": f"initial latents (seeded randn, seed {seed + 30}); init_noise_sigma is 1",
             "prompt_embeds": "text encoder output for [negative, prompt] (the CFG batch order: uncond first)",
             "timesteps": "scheduler.timesteps after set_timesteps (one entry per UNet evaluation)",
             "unet_out": "raw UNet output of every evaluation, batch [uncond, cond], before guidance",
             "step_latents": "latents after every scheduler step",
             "final_latents": "latents after the last step, before / scaling_factor and decoding",
             "image": "pipeline output_type='pt': (vae.decode(final_latents / sf).sample / 2 + 0.5).clamp(0, 1), "
                      "f32 before any uint8 conversion"},
            {**base, "kind": f"t2i_{label}", "prompt": T2I_PROMPT, "negative_prompt": T2I_NEGATIVE,
             "steps": T2I_STEPS, "guidance_scale": T2I_GUIDANCE, "eta": 0.0, "height": 16, "width": 16,
             "latents_seed": seed + 30, "timesteps": timesteps, "unet_evaluations": len(unet_outs),
             "scheduler": {"class": cls.__name__, **sched_cfg}},
        )


# --------------------------------------------------------------------------------------------------------------


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
    fixtures.mkdir(parents=True, exist_ok=True)
    ref_dir = fixtures / "reference"
    ref_dir.mkdir(exist_ok=True)
    # Remove only this script's own outputs: other scripts (make_cascade_fixtures.py) write here too.
    for old in list(ref_dir.glob("sd[12]-tiny_*.safetensors")) + [ref_dir / "manifest.json"]:
        if old.exists():
            old.unlink()
    refs = Refs(ref_dir)
    models_meta, timings = {}, {}

    for name, spec in MODELS.items():
        t1 = time.time()
        folder = fixtures / name
        originals, perturbed, sharpened, te_written = save_pipeline_folder(name, spec, folder, tok_files)
        pipe = load_pipeline(folder)
        check_loaded(pipe, originals, folder, spec)
        t2 = time.time()
        info = {
            "path": f"tests/fixtures/{name}",
            "structure": "SD 1.x" if spec["kind"] == "sd1" else "SD 2.x",
            "layout": spec["layout"],
            "init_seeds": spec["component_seeds"],
            "reference_seed_base": spec["seed"],
            "text_encoder_keys": "prefixed text_model." if spec["layout"] == "transformers4" else "no prefix",
            "text_encoder_keys_as_written_by_transformers": te_written,
            "tokenizer_files": sorted(p.name for p in (folder / "tokenizer").iterdir()),
            "pad_token": pipe.tokenizer.pad_token,
            "pad_token_id": pipe.tokenizer.pad_token_id,
            "prediction_type": spec["scheduler"]["prediction_type"],
            "scaling_factor": pipe.vae.config.scaling_factor,
            "constant_params_perturbed": perturbed,
            "attn2_qk_scale": ATTN_SHARPEN,
            "attn2_qk_weights_scaled": len(sharpened),
            "fp16_variant": ["unet"] if spec["kind"] == "sd1" else [],
            "files": folder_files(folder),
        }
        make_references(name, spec, pipe, refs, info)
        models_meta[name] = info
        timings[name] = {"build_save_reload_s": round(t2 - t1, 2), "references_s": round(time.time() - t2, 2)}
        print(f"{name}: built+saved+reloaded in {t2 - t1:.1f}s, references in {time.time() - t2:.1f}s; "
              f"attn2 sharpness {info['cross_attention_sharpness_t501']}", flush=True)

    manifest = {
        "format": 1,
        "generator": "weights-tools/make_sd_fixtures.py",
        "regenerate": REGENERATE,
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__, "safetensors": safetensors.__version__,
                     "tokenizers": tokenizers.__version__, "numpy": np.__version__},
        "device": "cpu",
        "dtype": "float32 everywhere (input_ids and timesteps stored as I32)",
        "models": models_meta,
        "files": refs.entries,
    }
    write_json(ref_dir / "manifest.json", manifest)
    print(f"done in {time.time() - t0:.1f}s: {len(refs.entries)} reference files in {ref_dir}")


if __name__ == "__main__":
    main()
