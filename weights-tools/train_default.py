#!/usr/bin/env python3
"""Train and export p2p-wgpu's small default model: a pixel-space cascade on the synthetic world of world.py.

Stages (one command runs them all, in order):

1. base:   a CLIP-structured text encoder (4 layers, 128 wide, 24 positions) trained jointly with a 32×32 pixel-space
           UNet2DConditionModel (epsilon prediction, DDPM linear betas 1e-4..0.02, 1000 steps, 10% empty captions for
           classifier-free guidance);
2. sr:     a 32→128 super-resolution UNet2DConditionModel (input = [noisy 128² image, bilinear-upsampled 32² image
           after noise augmentation], class_embed_type="timestep" carrying the augmentation level), conditioned on
           the frozen base text encoder, trained on random 64×64 crops;
3. export: fp16 safetensors in diffusers layout under models/default/ (model_index.json names the stages), then a
           sanity run (DDIM with x0 clipping: 50 steps for the base, 25 for SR) that writes PNGs to <work>/samples/.

Every stage is time-budgeted (--base-minutes, --sr-minutes) or step-budgeted (--base-steps, --sr-steps; a given step
count wins and makes the run reproducible from --seed) and checkpoints to <work> every --ckpt-minutes, so a killed
run leaves a usable model: rerun with --resume to continue, or with --stages export to export what is there.

    nice -n 19 weights-tools/.venv/bin/python weights-tools/train_default.py            # full run (~75 min, 2 cores)
    weights-tools/.venv/bin/python weights-tools/train_default.py --smoke               # a few steps of everything

This is our own code (p2p-wgpu project). Pinned environment: weights-tools/requirements.txt.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import diffusers
import transformers
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import world  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOKENIZER_SRC = REPO / "assets" / "clip-tokenizer"
MAX_LEN = 24
BASE_RES = 32
SR_RES = 128
SR_CROP = 64

BETAS = dict(beta_schedule="linear", beta_start=0.0001, beta_end=0.02, num_train_timesteps=1000)


# ------------------------------------------------------------------------------------------------------------------
# model specs


def text_config() -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=MAX_LEN,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        projection_dim=128,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )


def base_unet_config() -> dict:
    # SD 1.x convention: attention_head_dim is the head count -> 128 / 4 = 32 per head everywhere attention runs
    # (16×16 and 8×8 levels and the mid block).
    return dict(
        sample_size=BASE_RES,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(64, 128, 128),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=128,
        attention_head_dim=4,
        norm_num_groups=32,
    )


def sr_unet_config() -> dict:
    # attention only at the coarsest level (64 channels / 4 heads = 16 per head) and in the mid block. Narrow (16
    # channels at 128²) so that an SR step costs about a base step on lavapipe; the world's flat-colour shapes need
    # little more than sharpened edges.
    return dict(
        sample_size=SR_RES,
        in_channels=6,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(16, 32, 64),
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=128,
        attention_head_dim=4,
        norm_num_groups=8,
        class_embed_type="timestep",
    )


def head_dims(cfg: dict) -> list[int]:
    """Attention head dims of a UNet config in the SD 1.x convention (attention_head_dim = head count)."""
    heads = cfg["attention_head_dim"]
    widths = cfg["block_out_channels"]
    hs = heads if isinstance(heads, (list, tuple)) else [heads] * len(widths)
    dims = [w // h for w, h, t in zip(widths, hs, cfg["down_block_types"]) if "CrossAttn" in t]
    dims.append(widths[-1] // hs[-1])  # mid block
    dims += [w // h for w, h, t in zip(widths[::-1], hs[::-1], cfg["up_block_types"]) if "CrossAttn" in t]
    return dims


ALLOWED_HEAD_DIMS = {8, 12, 16, 32, 40, 64, 80, 96, 128, 160}


def check_configs() -> None:
    for cfg in (base_unet_config(), sr_unet_config()):
        assert set(head_dims(cfg)) <= ALLOWED_HEAD_DIMS, head_dims(cfg)
        assert all(w % cfg["norm_num_groups"] == 0 for w in cfg["block_out_channels"])


def noise_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**BETAS, clip_sample=False, prediction_type="epsilon")


def load_tokenizer() -> CLIPTokenizer:
    tok = CLIPTokenizer(str(TOKENIZER_SRC / "vocab.json"), str(TOKENIZER_SRC / "merges.txt"),
                        model_max_length=MAX_LEN, pad_token="<|endoftext|>")
    return tok


def tokenize(tok: CLIPTokenizer, captions: list[str]) -> torch.Tensor:
    ids = tok(captions, padding="max_length", max_length=MAX_LEN, truncation=True, return_tensors="pt").input_ids
    return ids


def check_caption_lengths(tok: CLIPTokenizer) -> int:
    longest = 0
    for s in range(2000):
        c = world.sample_scene(s)["caption"]
        n = len(tok(c).input_ids)
        assert n == world.n_tokens(c) + 2, (c, n)
        longest = max(longest, n)
    assert longest <= MAX_LEN, longest
    return longest


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ------------------------------------------------------------------------------------------------------------------
# data


def base_batch(rng: np.random.Generator, seed_base: int, step: int, bs: int, p_uncond: float):
    seeds = [seed_base + step * bs + i for i in range(bs)]
    scenes = [world.sample_scene(s) for s in seeds]
    x = torch.from_numpy(np.stack([world.render(s, BASE_RES) for s in scenes])).permute(0, 3, 1, 2) * 2 - 1
    caps = [("" if rng.random() < p_uncond else s["caption"]) for s in scenes]
    return x.contiguous(), caps


def sr_batch(rng: np.random.Generator, seed_base: int, step: int, bs: int, p_uncond: float):
    seeds = [seed_base + step * bs + i for i in range(bs)]
    scenes = [world.sample_scene(s) for s in seeds]
    hi = torch.from_numpy(np.stack([world.render(s, SR_RES) for s in scenes])).permute(0, 3, 1, 2) * 2 - 1
    lo = torch.from_numpy(np.stack([world.render(s, BASE_RES) for s in scenes])).permute(0, 3, 1, 2) * 2 - 1
    caps = [("" if rng.random() < p_uncond else s["caption"]) for s in scenes]
    # crop offsets on the 4-pixel grid, so the 64² crop is exactly a 16² low-res region
    offs = rng.integers(0, (SR_RES - SR_CROP) // 4 + 1, size=(bs, 2)) * 4
    return hi.contiguous(), lo.contiguous(), caps, offs


def upsample(lo: torch.Tensor, size: int = SR_RES) -> torch.Tensor:
    return F.interpolate(lo, size=(size, size), mode="bilinear", align_corners=False)


# ------------------------------------------------------------------------------------------------------------------
# training


class EMA:
    def __init__(self, modules: dict[str, torch.nn.Module], decay: float):
        self.decay = decay
        self.shadow = {k: copy.deepcopy(m).requires_grad_(False) for k, m in modules.items()}
        self.steps = 0

    @torch.no_grad()
    def update(self, modules: dict[str, torch.nn.Module]) -> None:
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for k, m in modules.items():
            for ps, p in zip(self.shadow[k].parameters(), m.parameters()):
                ps.lerp_(p, 1 - d)

    def state_dict(self):
        return {"steps": self.steps, **{k: m.state_dict() for k, m in self.shadow.items()}}

    def load_state_dict(self, sd):
        self.steps = sd["steps"]
        for k, m in self.shadow.items():
            m.load_state_dict(sd[k])


def budget_spent(step: int, elapsed: float, steps, minutes: float) -> bool:
    """Whether a stage's step budget (if given) or time budget is used up; a finished stage with a larger budget
    continues from its checkpoint (optimizer, EMA and data/noise streams included)."""
    return step >= steps if steps is not None else elapsed >= minutes * 60


def lr_at(step: int, lr: float, warmup: int) -> float:
    return lr * min(1.0, (step + 1) / warmup)


def log(work: Path, msg: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    with open(work / "train.log", "a") as f:
        f.write(line + "\n")


def train_base(args, work: Path, tok: CLIPTokenizer) -> None:
    ckpt_path = work / "base.pt"
    torch.manual_seed(args.seed)
    te = CLIPTextModel(text_config())
    unet = UNet2DConditionModel(**base_unet_config())
    params = list(te.parameters()) + list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    ema = EMA({"te": te, "unet": unet}, args.ema)
    sched = noise_scheduler()
    rng = np.random.default_rng([args.seed, 1])
    gen = torch.Generator().manual_seed(args.seed + 1)
    step, elapsed, losses = 0, 0.0, []
    if args.resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)
        te.load_state_dict(ck["te"]); unet.load_state_dict(ck["unet"]); opt.load_state_dict(ck["opt"])
        ema.load_state_dict(ck["ema"]); step, elapsed, losses = ck["step"], ck["elapsed"], ck["losses"]
        rng = ck["rng"]; gen.set_state(ck["gen"])
        if ck.get("done") and budget_spent(step, elapsed, args.base_steps, args.base_minutes):
            log(work, f"base: already done at step {step}")
            return
        log(work, f"base: resumed at step {step} ({elapsed / 60:.1f} min)")
    frozen = ck.get("te_frozen_at") if args.resume and ckpt_path.exists() else None

    def freeze_te() -> None:
        # From here on the text encoder is the EMA text encoder, fixed: the SR stage (trained beside the rest of the
        # base run) is conditioned on exactly the encoder that is exported.
        te.load_state_dict(ema.shadow["te"].state_dict())
        te.requires_grad_(False).eval()
        for p in te.parameters():
            opt.state.pop(p, None)

    if frozen is not None:
        freeze_te()
        log(work, f"base: text encoder frozen since step {frozen}")
    log(work, f"base: text encoder {n_params(te):,} params, unet {n_params(unet):,} params")

    def save(done=False):
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(dict(te=te.state_dict(), unet=unet.state_dict(), opt=opt.state_dict(), ema=ema.state_dict(),
                        step=step, elapsed=elapsed, losses=losses, rng=rng, gen=gen.get_state(), done=done,
                        te_frozen_at=frozen), tmp)
        os.replace(tmp, ckpt_path)

    te.train(); unet.train()
    t_start = time.time() - elapsed
    last_ckpt = time.time()
    window = []
    while True:
        elapsed = time.time() - t_start
        if args.base_steps is not None:
            if step >= args.base_steps:
                break
        elif elapsed >= args.base_minutes * 60:
            break
        if frozen is None and args.freeze_te_at is not None and step >= args.freeze_te_at:
            frozen = step
            freeze_te()
            save()
            log(work, f"base: text encoder frozen at step {step} (EMA weights)")
        x0, caps = base_batch(rng, args.seed * 1_000_003, step, args.batch, args.p_uncond)
        ids = tokenize(tok, caps)
        noise = torch.randn(x0.shape, generator=gen)
        if step >= args.offset_noise_from:
            # Offset noise: a per-image, per-channel constant in the noise. Without it the noise's own mean
            # (std 1/32 per channel at 32²) stays visible through the whole linear schedule, the model takes it
            # for the image's mean colour, and samples come out with random colour casts instead of the asked
            # background (the run log of 2026-11-26, third session).
            noise = noise + args.offset_noise * torch.randn(x0.shape[0], x0.shape[1], 1, 1, generator=gen)
        t = torch.randint(0, 1000, (x0.shape[0],), generator=gen)
        xt = sched.add_noise(x0, noise, t)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.lr, args.warmup)
        with torch.set_grad_enabled(frozen is None):
            emb = te(ids).last_hidden_state
        pred = unet(xt, t, emb).sample
        per_sample = ((pred - noise) ** 2).mean((1, 2, 3))
        loss = per_sample.mean()
        if step >= args.loss_weight_from:
            # Weight min(1/ᾱ_t, cap): the high-noise steps, where the layout and the background's mean colour are
            # decided, have tiny epsilon errors and otherwise get almost no share of the gradient.
            w = (1 / sched.alphas_cumprod[t]).clamp(max=args.loss_weight_cap)
            objective = (w * per_sample).mean()
        else:
            objective = loss
        opt.zero_grad(set_to_none=True)
        objective.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        # A shorter EMA horizon once offset noise starts, so the export reflects the late phase.
        ema.decay = args.ema_late if step >= args.offset_noise_from else args.ema
        ema.update({"unet": unet} if frozen is not None else {"te": te, "unet": unet})
        step += 1
        window.append(loss.item())
        if step % args.log_every == 0:
            m = float(np.mean(window)); window = []
            losses.append((step, round(time.time() - t_start, 1), m))
            log(work, f"base step {step} loss {m:.4f} ({(time.time() - t_start) / step:.2f} s/step)")
        if time.time() - last_ckpt > args.ckpt_minutes * 60:
            save(); last_ckpt = time.time()
            log(work, f"base: checkpoint at step {step}")
    elapsed = time.time() - t_start
    save(done=True)
    log(work, f"base: done, {step} steps in {elapsed / 60:.1f} min")


def load_base(work: Path, use_ema: bool = True):
    ck = torch.load(work / "base.pt", weights_only=False)
    te = CLIPTextModel(text_config())
    unet = UNet2DConditionModel(**base_unet_config())
    if use_ema:
        te.load_state_dict(ck["ema"]["te"]); unet.load_state_dict(ck["ema"]["unet"])
    else:
        te.load_state_dict(ck["te"]); unet.load_state_dict(ck["unet"])
    return te.eval(), unet.eval(), ck


def te_fingerprint(te: torch.nn.Module) -> float:
    return float(sum(p.detach().double().abs().sum() for p in te.parameters()))


def train_sr(args, work: Path, tok: CLIPTokenizer) -> None:
    ckpt_path = work / "sr.pt"
    te, _, bck = load_base(work)
    te.requires_grad_(False)
    if bck.get("te_frozen_at") is None:
        log(work, "sr: warning: the base text encoder is not frozen yet; the SR stage must be retrained if it changes")
    te_print = te_fingerprint(te)
    torch.manual_seed(args.seed + 2)
    unet = UNet2DConditionModel(**sr_unet_config())
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    ema = EMA({"unet": unet}, args.sr_ema)
    sched = noise_scheduler()
    rng = np.random.default_rng([args.seed, 2])
    gen = torch.Generator().manual_seed(args.seed + 3)
    step, elapsed, losses = 0, 0.0, []
    if args.resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)
        unet.load_state_dict(ck["unet"]); opt.load_state_dict(ck["opt"]); ema.load_state_dict(ck["ema"])
        step, elapsed, losses = ck["step"], ck["elapsed"], ck["losses"]
        rng = ck["rng"]; gen.set_state(ck["gen"])
        if ck.get("done") and budget_spent(step, elapsed, args.sr_steps, args.sr_minutes):
            log(work, f"sr: already done at step {step}")
            return
        log(work, f"sr: resumed at step {step} ({elapsed / 60:.1f} min)")
    log(work, f"sr: unet {n_params(unet):,} params")

    def save(done=False):
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(dict(unet=unet.state_dict(), opt=opt.state_dict(), ema=ema.state_dict(), step=step,
                        elapsed=elapsed, losses=losses, rng=rng, gen=gen.get_state(), done=done,
                        te_fingerprint=te_print, config=sr_unet_config()), tmp)
        os.replace(tmp, ckpt_path)

    unet.train()
    t_start = time.time() - elapsed
    last_ckpt = time.time()
    window = []
    c = SR_CROP
    while True:
        elapsed = time.time() - t_start
        if args.sr_steps is not None:
            if step >= args.sr_steps:
                break
        elif elapsed >= args.sr_minutes * 60:
            break
        hi, lo, caps, offs = sr_batch(rng, args.seed * 1_000_003 + 777_777_777, step, args.sr_batch, args.p_uncond)
        bs = hi.shape[0]
        up = upsample(lo)
        aug_t = torch.randint(0, args.sr_aug_max + 1, (bs,), generator=gen)
        up = sched.add_noise(up, torch.randn(up.shape, generator=gen), aug_t)
        hi = torch.stack([hi[i, :, oy:oy + c, ox:ox + c] for i, (oy, ox) in enumerate(offs)])
        up = torch.stack([up[i, :, oy:oy + c, ox:ox + c] for i, (oy, ox) in enumerate(offs)])
        noise = torch.randn(hi.shape, generator=gen)
        t = torch.randint(0, 1000, (bs,), generator=gen)
        xt = sched.add_noise(hi, noise, t)
        with torch.no_grad():
            emb = te(tokenize(tok, caps)).last_hidden_state
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.lr, args.warmup)
        pred = unet(torch.cat([xt, up], 1), t, emb, class_labels=aug_t).sample
        # v-prediction (as the SD x4 upscaler): at high noise the target is mostly the clean image, which the
        # upsampled input nearly gives; an epsilon-predicting SR stage stayed at 0.03 MSE even at t = 950.
        loss = F.mse_loss(pred, sched.get_velocity(hi, noise, t))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.update({"unet": unet})
        step += 1
        window.append(loss.item())
        if step % args.log_every == 0:
            m = float(np.mean(window)); window = []
            losses.append((step, round(time.time() - t_start, 1), m))
            log(work, f"sr step {step} loss {m:.4f} ({(time.time() - t_start) / step:.2f} s/step)")
        if time.time() - last_ckpt > args.ckpt_minutes * 60:
            save(); last_ckpt = time.time()
            log(work, f"sr: checkpoint at step {step}")
    elapsed = time.time() - t_start
    save(done=True)
    log(work, f"sr: done, {step} steps in {elapsed / 60:.1f} min")


# ------------------------------------------------------------------------------------------------------------------
# export


SR_PREDICTION = "v_prediction"


def ddim_config(prediction_type: str = "epsilon") -> dict:
    return dict(**BETAS, clip_sample=True, set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type,
                timestep_spacing="leading", trained_betas=None)


def trained_token_ids(tok: CLIPTokenizer, scenes: int = 20000) -> set[int]:
    """Every token id of the captions of the first `scenes` world scenes (from the training seed's stream the
    vocabulary is the same), the special tokens and the empty prompt."""
    ids = {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}
    captions = {world.sample_scene(s)["caption"] for s in range(scenes)} | set(world.all_phrases())
    for c in captions:
        ids.update(tok(c).input_ids)
    return ids


def export(args, work: Path) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("text_encoder", "tokenizer", "unet", "scheduler", "sr_unet", "sr_scheduler"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    te, unet, ck = load_base(work)
    te_print = te_fingerprint(te)
    trained = trained_token_ids(load_tokenizer())
    with torch.no_grad():  # rows of tokens no caption uses were never trained: zero them (same outputs for the
        table = te.get_input_embeddings().weight  # world's prompts; zeros compress in git)
        keep = torch.zeros(table.shape[0], dtype=torch.bool)
        keep[sorted(trained)] = True
        table[~keep] = 0
    print(f"token table: {len(trained)} trained rows kept, {int((~keep).sum())} zeroed", flush=True)
    te.half().save_pretrained(out / "text_encoder", safe_serialization=True)
    unet.half().save_pretrained(out / "unet", safe_serialization=True)
    sr = UNet2DConditionModel(**sr_unet_config())
    sr_steps = 0
    if (work / "sr.pt").exists():
        sck = torch.load(work / "sr.pt", weights_only=False)
        # (a float sum: equal up to the summation order of torch's threads)
        if sck.get("te_fingerprint") is None or abs(sck["te_fingerprint"] - te_print) > 1e-9 * abs(te_print):
            raise SystemExit("export: the SR stage was trained against another text encoder than the base's; "
                             "retrain it (--stages sr without --resume)")
        sr.load_state_dict(sck["ema"]["unet"]); sr_steps = sck["step"]
    else:
        print("warning: no SR checkpoint; exporting an untrained SR stage", flush=True)
    sr.half().save_pretrained(out / "sr_unet", safe_serialization=True)
    # tokenizer: the real CLIP BPE files plus an SD 1.x-style config with model_max_length 24
    tdir = out / "tokenizer"
    tdir.mkdir()
    shutil.copy(TOKENIZER_SRC / "vocab.json", tdir / "vocab.json")
    shutil.copy(TOKENIZER_SRC / "merges.txt", tdir / "merges.txt")
    typed = lambda c: {"__type": "AddedToken", "content": c, "lstrip": False, "normalized": True, "rstrip": False,
                       "single_word": False}
    plain = lambda c: {"content": c, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
    (tdir / "tokenizer_config.json").write_text(json.dumps({
        "add_prefix_space": False, "bos_token": typed("<|startoftext|>"), "do_lower_case": True,
        "eos_token": typed("<|endoftext|>"), "errors": "replace", "model_max_length": MAX_LEN,
        "pad_token": "<|endoftext|>", "special_tokens_map_file": "./special_tokens_map.json",
        "tokenizer_class": "CLIPTokenizer", "unk_token": typed("<|endoftext|>")}, indent=2) + "\n")
    (tdir / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": plain("<|startoftext|>"), "eos_token": plain("<|endoftext|>"), "pad_token": "<|endoftext|>",
        "unk_token": plain("<|endoftext|>")}, indent=2) + "\n")
    # Both stages sample with DDIM and x0 clipped to [-1, 1] (pixel-space models): on the CPU-trained model this
    # gives clean objects where PNDM (no clipping) leaves saturated colour fields (runs/ log, 2026-11-26).
    DDIMScheduler(**ddim_config()).save_pretrained(out / "scheduler")
    DDIMScheduler(**ddim_config(SR_PREDICTION)).save_pretrained(out / "sr_scheduler")
    index = {
        "_class_name": "P2PCascadePipeline",
        "_diffusers_version": diffusers.__version__,
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "sr_unet": ["diffusers", "UNet2DConditionModel"],
        "sr_scheduler": ["diffusers", "DDIMScheduler"],
        "sr_noise_level": args.sr_noise_level,
        "sr_guidance_scale": args.sr_guidance,
        "guidance_scale": args.base_guidance,
        "num_inference_steps": args.default_steps,
        "sr_num_inference_steps": args.default_sr_steps,
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    info = dict(base_steps=ck["step"], sr_steps=sr_steps, total_bytes=total)
    print(f"exported to {out}: {total / 1e6:.1f} MB, base {ck['step']} steps, sr {sr_steps} steps", flush=True)
    return info


# ------------------------------------------------------------------------------------------------------------------
# sampling (diffusers components loaded from an exported folder)


def load_exported(folder: str | Path, dtype=torch.float32):
    folder = Path(folder)
    tok = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    te = CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=dtype).eval()
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=dtype).eval()
    sr = UNet2DConditionModel.from_pretrained(folder / "sr_unet", torch_dtype=dtype).eval()
    sched = DDIMScheduler.from_pretrained(folder / "scheduler")
    sr_sched = DDIMScheduler.from_pretrained(folder / "sr_scheduler")
    index = json.loads((folder / "model_index.json").read_text())
    return dict(tok=tok, te=te, unet=unet, sr=sr, sched=sched, sr_sched=sr_sched, index=index)


@torch.no_grad()
def encode(m: dict, prompts: list[str]) -> torch.Tensor:
    ids = m["tok"](prompts, padding="max_length", max_length=m["tok"].model_max_length, truncation=True,
                   return_tensors="pt").input_ids
    return m["te"](ids).last_hidden_state


@torch.no_grad()
def sample_base(m: dict, prompts: list[str], seed: int = 0, steps: int = 50, guidance: float = 5.0,
                latents: torch.Tensor | None = None) -> torch.Tensor:
    """Returns images in [-1, 1], [B, 3, 32, 32]."""
    b = len(prompts)
    cond = encode(m, prompts)
    unc = encode(m, [""] * b)
    emb = torch.cat([unc, cond])
    sched = m["sched"]
    sched.set_timesteps(steps)
    res = m["unet"].config.sample_size
    x = latents if latents is not None else torch.randn(b, 3, res, res, generator=torch.Generator().manual_seed(seed))
    x = x * sched.init_noise_sigma  # 1 except for Euler
    for t in sched.timesteps:
        eps = m["unet"](sched.scale_model_input(torch.cat([x, x]), t), t, emb).sample
        eu, ec = eps.chunk(2)
        x = sched.step(eu + guidance * (ec - eu), t, x).prev_sample
    return x.clamp(-1, 1)


@torch.no_grad()
def sample_sr(m: dict, prompts: list[str], lo: torch.Tensor, seed: int = 0, steps: int = 50,
              guidance: float | None = None, noise_level: int | None = None) -> torch.Tensor:
    """lo: [B, 3, 32, 32] in [-1, 1] -> [B, 3, 128, 128] in [-1, 1]."""
    guidance = m["index"]["sr_guidance_scale"] if guidance is None else guidance
    level = m["index"]["sr_noise_level"] if noise_level is None else noise_level
    b = len(prompts)
    g = torch.Generator().manual_seed(seed)
    cond = encode(m, prompts)
    unc = encode(m, [""] * b)
    emb = torch.cat([unc, cond])
    ddpm = noise_scheduler()
    up = upsample(lo.float())
    lv = torch.full((b,), level, dtype=torch.long)
    up = ddpm.add_noise(up, torch.randn(up.shape, generator=g), lv)
    sched = m["sr_sched"]
    sched.set_timesteps(steps)
    x = torch.randn(b, 3, SR_RES, SR_RES, generator=g)
    for t in sched.timesteps:
        inp = torch.cat([torch.cat([x, up], 1)] * 2)
        eps = m["sr"](inp, t, emb, class_labels=torch.cat([lv, lv])).sample
        eu, ec = eps.chunk(2)
        x = sched.step(eu + guidance * (ec - eu), t, x).prev_sample
    return x.clamp(-1, 1)


def to_img(x: torch.Tensor) -> np.ndarray:
    return (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().numpy()


SANITY_PROMPTS = [
    "a red circle on a white background",
    "a blue square on a white background",
    "a green triangle on a black background",
    "a big yellow star on a gray background",
    "a small pink heart on the left on a white background",
    "a purple ring in the center on a white background",
    "a red circle on the left and a blue square on the right on a white background",
    "a big outlined orange cross on a black background",
]


def sanity(args, work: Path) -> list[str]:
    m = load_exported(args.out)
    sd = work / "samples"
    sd.mkdir(parents=True, exist_ok=True)
    prompts = SANITY_PROMPTS[: (2 if args.smoke else len(SANITY_PROMPTS))]
    steps = 3 if args.smoke else 50
    t = time.time()
    lo = sample_base(m, prompts, seed=args.seed, steps=steps, guidance=args.base_guidance)
    t_base = time.time() - t
    t = time.time()
    hi = sample_sr(m, prompts, lo, seed=args.seed, steps=3 if args.smoke else args.sanity_sr_steps)
    t_sr = time.time() - t
    L, H = to_img(lo), to_img(hi)
    written = []
    for i, p in enumerate(prompts):
        name = f"{i:02d}_" + p.replace(" ", "_")[:60]
        world.save_png(str(sd / f"{name}_32.png"), L[i])
        world.save_png(str(sd / f"{name}_128.png"), H[i])
        written.append(name)
    # contact sheet: base upsampled nearest ×4 | SR output, one row per prompt
    sheet = np.ones((len(prompts) * 130, 260, 3), np.float32)
    for i in range(len(prompts)):
        sheet[i * 130:i * 130 + 128, :128] = np.kron(L[i], np.ones((4, 4, 1)))
        sheet[i * 130:i * 130 + 128, 130:258] = H[i]
    world.save_png(str(sd / "sheet.png"), sheet)
    log(work, f"sanity: {len(prompts)} prompts, base {steps} DDIM steps {t_base:.1f}s, SR {args.sanity_sr_steps} DDIM steps "
              f"{t_sr:.1f}s -> {sd}")
    return written


# ------------------------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--stages", default="base,sr,export", help="comma list of base, sr, export")
    ap.add_argument("--out", default=str(REPO / "models" / "default"))
    ap.add_argument("--work", default="/tmp/p2p-train")
    ap.add_argument("--resume", action="store_true", help="continue from the checkpoints in --work")
    ap.add_argument("--smoke", action="store_true", help="a few steps of every stage (into --work/smoke)")
    ap.add_argument("--base-minutes", type=float, default=55.0)
    ap.add_argument("--sr-minutes", type=float, default=20.0)
    ap.add_argument("--base-steps", type=int, default=None, help="fixed step count (overrides --base-minutes)")
    ap.add_argument("--sr-steps", type=int, default=None, help="fixed step count (overrides --sr-minutes)")
    ap.add_argument("--ckpt-minutes", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--sr-batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--ema", type=float, default=0.999, help="EMA decay cap (warmup: (1+n)/(10+n))")
    ap.add_argument("--sr-ema", type=float, default=0.995, help="EMA decay cap of the SR stage (a shorter run)")
    ap.add_argument("--freeze-te-at", type=int, default=2985,
                    help="base step from which the text encoder is fixed (its EMA weights); the SR stage needs it")
    ap.add_argument("--loss-weight-cap", type=float, default=20.0,
                    help="base loss weight min(1/alphas_cumprod[t], cap) from --loss-weight-from on (1: plain MSE)")
    ap.add_argument("--loss-weight-from", type=int, default=3101, help="base step from which the loss is weighted")
    ap.add_argument("--ema-late", type=float, default=0.998, help="base EMA decay cap from --offset-noise-from on")
    ap.add_argument("--offset-noise", type=float, default=0.1, help="per-channel noise offset (base stage)")
    ap.add_argument("--offset-noise-from", type=int, default=3359, help="base step from which offset noise is added")
    ap.add_argument("--p-uncond", type=float, default=0.1)
    ap.add_argument("--sr-aug-max", type=int, default=250, help="max SR noise-augmentation level in training")
    ap.add_argument("--sr-noise-level", type=int, default=100)
    ap.add_argument("--sr-guidance", type=float, default=1.0, help="SR guidance (1: no unconditional batch; 3 looked the same)")
    ap.add_argument("--base-guidance", type=float, default=3.0, help="model_index.json guidance_scale (base) and the sanity samples")
    ap.add_argument("--sanity-sr-steps", type=int, default=25, help="DDIM steps of the SR stage in the sanity run")
    ap.add_argument("--default-steps", type=int, default=20, help="model_index.json num_inference_steps (base)")
    ap.add_argument("--default-sr-steps", type=int, default=4, help="model_index.json sr_num_inference_steps")
    ap.add_argument("--skip-sanity", action="store_true", help="export without the sanity samples")
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    check_configs()
    work = Path(args.work)
    if args.smoke:
        work = work / "smoke"
        if work.exists() and not args.resume:
            shutil.rmtree(work)
        args.out = str(work / "model")
        args.base_steps = args.base_steps or 3
        args.sr_steps = args.sr_steps or 3
        args.log_every = 1
    work.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer()
    longest = check_caption_lengths(tok)
    log(work, f"start: {' '.join(sys.argv)} | torch {torch.__version__} diffusers {diffusers.__version__} "
              f"transformers {transformers.__version__} | longest caption {longest} tokens")
    stages = args.stages.split(",")
    t0 = time.time()
    if "base" in stages:
        train_base(args, work, tok)
    if "sr" in stages:
        train_sr(args, work, tok)
    if "export" in stages:
        info = export(args, work)
        if not args.skip_sanity:
            sanity(args, work)
        (work / "export_info.json").write_text(json.dumps(info, indent=2))
    log(work, f"all stages done in {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
