#!/usr/bin/env python3
"""diffusers reference run of the shipped default model (models/default) for tests/default_model.rs.

One plain text-to-image run of the cascade from given noises, written as an explicit loop on diffusers' own
UNet2DConditionModel, DDIMScheduler (the folder's scheduler/ and sr_scheduler/ configs) and transformers'
CLIPTextModel, with the engine's cascade semantics (src/models/cascade.rs; the same loop as
make_cascade_fixtures.py's, with the folder's schedulers and guidance scales):

  base: x = latents; per timestep the UNet on [x, x] with the text of ["", prompt], u + g (c - u), DDIM step
        (x0 clipped, as the folder's scheduler says); base image = clamp(x, -1, 1);
  SR:   upsampled = F.interpolate(base image, x4, bilinear, align_corners=False), augmented at sr_noise_level with
        sr_aug_noise; y = sr_latents; per timestep the SR UNet on cat([y, augmented]) doubled for CFG, class label
        sr_noise_level, u + sr_g (c - u), DDIM step; images = (y / 2 + 0.5).clamp(0, 1).

Small sizes keep the test cheap on lavapipe: a 8x8 base (32x32 output), 4 base steps and 2 SR steps. The weights
are the stored float16 values computed in float32.

    weights-tools/.venv/bin/python weights-tools/make_default_reference.py    # -> tests/fixtures/reference/default-t2i.safetensors

This is our own code (p2p-wgpu project). Pinned environment: weights-tools/requirements.txt.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextModel, CLIPTokenizer

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "default"
OUT = REPO / "tests" / "fixtures" / "reference" / "default-t2i.safetensors"
PROMPT = "a red circle on the left on a white background"
BASE, SCALE, STEPS, SR_STEPS, SEED = 8, 4, 4, 2, 7


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(MODEL))
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args()
    run(Path(a.model), Path(a.out))


@torch.no_grad()
def run(model: Path, out: Path) -> None:
    torch.set_num_threads(1)
    index = json.loads((model / "model_index.json").read_text())
    tok = CLIPTokenizer.from_pretrained(str(model / "tokenizer"))
    te = CLIPTextModel.from_pretrained(str(model / "text_encoder"), dtype=torch.float32).eval()
    unet = UNet2DConditionModel.from_pretrained(str(model / "unet"), torch_dtype=torch.float32).eval()
    sr = UNet2DConditionModel.from_pretrained(str(model / "sr_unet"), torch_dtype=torch.float32).eval()
    sched = DDIMScheduler.from_pretrained(str(model / "scheduler"))
    sr_sched = DDIMScheduler.from_pretrained(str(model / "sr_scheduler"))

    def text(prompts):
        ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        return te(ids).last_hidden_state

    g = torch.Generator().manual_seed(SEED)
    latents = torch.randn(1, 3, BASE, BASE, generator=g)
    aug_noise = torch.randn(1, 3, BASE * SCALE, BASE * SCALE, generator=g)
    sr_latents = torch.randn(1, 3, BASE * SCALE, BASE * SCALE, generator=g)

    emb = text(["", PROMPT])
    gs = index["guidance_scale"]
    sched.set_timesteps(STEPS)
    x = latents.clone()
    for t in sched.timesteps:
        u, c = unet(torch.cat([x, x]), t, encoder_hidden_states=emb).sample.chunk(2)
        x = sched.step(u + gs * (c - u), t, x).prev_sample
    base_final = x
    up = F.interpolate(x.clamp(-1, 1), scale_factor=SCALE, mode="bilinear", align_corners=False)
    level = index["sr_noise_level"]
    aug = sr_sched.add_noise(up, aug_noise, torch.tensor([level]))
    sr_sched.set_timesteps(SR_STEPS)
    y = sr_latents.clone()
    labels = torch.full((2,), float(level))
    for t in sr_sched.timesteps:
        inp = torch.cat([y, aug], 1)
        u, c = sr(torch.cat([inp, inp]), t, encoder_hidden_states=emb, class_labels=labels).sample.chunk(2)
        y = sr_sched.step(u + index["sr_guidance_scale"] * (c - u), t, y).prev_sample
    images = (y / 2 + 0.5).clamp(0, 1)
    tensors = dict(latents=latents, sr_aug_noise=aug_noise, sr_latents=sr_latents, base_final=base_final,
                   images=images)
    meta = dict(prompt=PROMPT, steps=str(STEPS), sr_steps=str(SR_STEPS), format="pt")
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(out), metadata=meta)
    print(f"wrote {out}: base std {float(base_final.std()):.3f}, images mean {float(images.mean()):.3f}")


if __name__ == "__main__":
    main()
