#!/usr/bin/env python3
"""Real-image editing parity fixtures for the pixel cascade: tests/fixtures/inversion/cascade_*.

Our own script (p2p-wgpu project): docs/DESIGN.md §5 "Real images", the cascade paragraph, on the tiny cascade
(tests/fixtures/cascade-tiny: 8x8 base, 32x32 output, text length 20), driving diffusers' UNet2DConditionModel:

  1. the picture: cascade_full.png (32x32) and cascade_base.png (the same resized to 8x8 with PIL's BICUBIC),
     both x / 127.5 - 1; the engine's own fitting is not under test here (the Rust test decodes both files);
  2. base inversion: DDIM inversion of the base picture with the source prompt (make_inversion_fixtures.ddim_invert,
     the base scheduler config as DDIM, never clipped);
  3. SR inversion: the same on the full picture with the SR UNet, its input cat([y, augmented]) where augmented =
     sr_scheduler.add_noise(upsample4(clamp(base picture)), aug_noise, sr_noise_level), class labels
     sr_noise_level, source prompt only (guidance 1);
  4. base edit: ptp_reference.generate from the base x_S (DDIM from the base config, which clips x0, guidance
     GUIDANCE) by the method (ddim, negative-prompt: every unconditional prompt is the source, direct: the source
     row pinned by the offset after every step);
  5. SR of every row: augmented_b from that row's edited base (clamped, upsampled, noised with the same aug_noise),
     DDIM from the SR x_S shared by every row, CFG at sr_guidance_scale with [negative x B, prompts] (negative:
     "" or, for negative-prompt, the source prompt), and for direct the source row pinned to the SR inversion.
  6. images = (y / 2 + 0.5).clamp(0, 1).

Checks before writing: each edit moves every target image by more than 1e-2 (relative L2) from the same run with
the controller off; the three methods' target images differ pairwise by more than 1e-2; the direct source row's
final SR sample equals the full picture (the pin); the reference's own noise (1 vs 2 threads) stays below a tenth
of the Rust test's tolerances.

Regenerate (seconds), from the repository root:

    weights-tools/.venv/bin/python weights-tools/make_cascade_inversion_fixtures.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

import diffusers
import transformers
from diffusers import DDIMScheduler
from diffusers.models.attention_processor import AttnProcessor

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ptp_reference as ptp  # noqa: E402
import make_cascade_fixtures as mcf  # noqa: E402
import make_inversion_fixtures as mif  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests/fixtures/inversion"
MODEL = REPO / "tests/fixtures/cascade-tiny"
REGENERATE = "weights-tools/.venv/bin/python weights-tools/make_cascade_inversion_fixtures.py"
STEPS = 3
SR_STEPS = 2
GUIDANCE = 5.0
METHODS = ["ddim", "negative-prompt", "direct"]
TOL = {"inversion": 1e-4, "sr_inversion": 1e-4, "base": 2e-3, "sr": 2e-3, "image": 1e-3}
EDITS = [
    ("swap", dict(prompt="a red circle on a white background", swaps=[("red", "blue")], cross_steps="0.8",
                  self_steps="0.4")),
    ("refine", dict(prompt="a red circle", targets=["a big red circle"], cross_steps="0.8", self_steps="0.4")),
    ("reweight_blend", dict(prompt="a red circle on a white background", reweights=[("red", 3.0)],
                            blend_words=["circle"], blend_threshold=0.3, cross_steps="0.8", self_steps="0.4")),
]


def picture() -> np.ndarray:
    """32x32 RGB8: a warm disc on a cool gradient (smooth, so that the 8x8 base keeps its layout)."""
    y, x = np.mgrid[0:32, 0:32].astype(np.float64)
    r = np.hypot(x - 13.5, y - 17.0)
    disc = np.clip(7.0 - r, 0.0, 1.0)[..., None]
    bg = np.stack([60 + 3 * x, 90 + 2 * y, 200 - 2 * x], -1)
    fg = np.array([220.0, 40.0, 30.0])
    return np.clip(bg * (1 - disc) + fg * disc, 0, 255).round().astype(np.uint8)


def unit(rgb8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb8).permute(2, 0, 1)[None].float() / 127.5 - 1.0


def rel_l2(a, b) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def augmented(sr_sched, base: torch.Tensor, aug_noise: torch.Tensor, level: int) -> torch.Tensor:
    up = F.interpolate(base.clamp(-1, 1), scale_factor=mcf.SR_SCALE, mode="bilinear", align_corners=False)
    b = base.shape[0]
    return sr_sched.add_noise(up, aug_noise.expand(b, -1, -1, -1), torch.tensor([level] * b, dtype=torch.long))


@torch.no_grad()
def sr_invert(tok, te, sr_unet, sr_config, prompt, y0, aug, level, steps) -> torch.Tensor:
    """x_0 ... x_S of the SR stage ([S+1, 1, 3, H, W]): ddim_invert's step with the conditioned SR UNet."""
    sr_unet.set_attn_processor(AttnProcessor())
    sched = DDIMScheduler.from_config(sr_config)
    sched.set_timesteps(steps)
    acp, final = sched.alphas_cumprod, sched.final_alpha_cumprod
    ratio = sched.config.num_train_timesteps // steps
    assert sched.config.prediction_type == "epsilon"
    _, emb = ptp.encode(tok, te, [prompt])
    labels = torch.full((1,), float(level))
    x, out = y0, [y0]
    for t in reversed(sched.timesteps):
        eps = sr_unet(torch.cat([x, aug], 1), t, encoder_hidden_states=emb, class_labels=labels).sample
        t_from = int(t) - ratio
        a_from = acp[t_from] if t_from >= 0 else final
        a_to = acp[int(t)]
        x0 = (x - (1 - a_from) ** 0.5 * eps) / a_from ** 0.5
        x = a_to ** 0.5 * x0 + (1 - a_to) ** 0.5 * eps
        out.append(x)
    return torch.stack(out)


@torch.no_grad()
def sr_edit(tok, te, sr_unet, sr_config, prompts, negative, base_final, aug_noise, level, traj_sr, pin, guidance):
    """Every row super-resolved from the SR x_S on its own edited base (module doc, step 5)."""
    sr_unet.set_attn_processor(AttnProcessor())
    b = len(prompts)
    sched = DDIMScheduler.from_config(sr_config)
    aug = augmented(sched, base_final, aug_noise, level)
    _, text = ptp.encode(tok, te, [negative] * b + list(prompts))
    sched.set_timesteps(SR_STEPS)
    y = traj_sr[-1].expand(b, -1, -1, -1).clone()
    labels = torch.full((2 * b,), float(level))
    for i, t in enumerate(sched.timesteps):
        inp = torch.cat([y, aug], 1)
        out = sr_unet(torch.cat([inp, inp]), t, encoder_hidden_states=text, class_labels=labels).sample
        u, c = out.chunk(2)
        y = sched.step(u + guidance * (c - u), t, y).prev_sample
        if pin:
            y = torch.cat([y[:1] + (traj_sr[SR_STEPS - 1 - i] - y[:1]), y[1:]])
    return y


def run_all(full: torch.Tensor, base: torch.Tensor, aug_noise: torch.Tensor) -> dict:
    tok, te, unet, sr_unet = mcf.load_folder(MODEL)
    index = json.loads((MODEL / "model_index.json").read_text())
    level, sr_guidance = int(index["sr_noise_level"]), float(index["sr_guidance_scale"])
    base_config = json.loads((MODEL / "scheduler/scheduler_config.json").read_text())
    sr_config = json.loads((MODEL / "sr_scheduler/scheduler_config.json").read_text())
    identity = SimpleNamespace(config=SimpleNamespace(scaling_factor=1.0),
                               decode=lambda x: SimpleNamespace(sample=x))
    pipe = SimpleNamespace(tokenizer=tok, text_encoder=te, unet=unet, vae=identity,
                           scheduler=SimpleNamespace(config=base_config))
    blend_res = ptp.default_blend_res(unet, 8)
    aug_src = augmented(DDIMScheduler.from_config(sr_config), base, aug_noise, level)
    results = {}
    for edit_name, fields in EDITS:
        spec = ptp.EditSpec(**fields)
        plan = ptp.build_plan(spec, tok, STEPS, max_len=mcf.MAX_LEN)
        traj = mif.ddim_invert(pipe, spec.prompt, base, STEPS)
        traj_sr = sr_invert(tok, te, sr_unet, sr_config, spec.prompt, full, aug_src, level, SR_STEPS)
        for method in METHODS:
            def run(on: bool = True) -> dict:
                negative = plan.prompts[0] if method == "negative-prompt" else ""
                g = ptp.generate(pipe, plan.prompts, traj[-1], DDIMScheduler.from_config(base_config), STEPS,
                                 GUIDANCE, plan=plan, blend_res=blend_res if plan.blend_positions else None,
                                 negative=negative, edit=on, pin=traj if method == "direct" else None)
                y = sr_edit(tok, te, sr_unet, sr_config, plan.prompts, negative, g["final_latents"], aug_noise,
                            level, traj_sr, method == "direct", sr_guidance)
                return {"traj": traj, "traj_sr": traj_sr, "base": g["final_latents"], "sr": y,
                        "image": (y / 2 + 0.5).clamp(0, 1), "prompts": plan.prompts, "spec": spec}
            results[(edit_name, method)] = (run(), run(on=False))
    return results


def main() -> None:
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    ptp.MAX_LEN = mcf.MAX_LEN
    rgb8 = picture()
    Image.fromarray(rgb8, "RGB").save(OUT / "cascade_full.png")
    small = np.asarray(Image.fromarray(rgb8, "RGB").resize((8, 8), Image.BICUBIC))
    Image.fromarray(small, "RGB").save(OUT / "cascade_base.png")
    full, base = unit(rgb8), unit(small)
    aug_noise = torch.randn((1, 3, 32, 32), generator=torch.Generator().manual_seed(7))
    res = run_all(full, base, aug_noise)
    torch.set_num_threads(2)
    res2 = run_all(full, base, aug_noise)
    torch.set_num_threads(1)
    cases = []
    for edit_name, _ in EDITS:
        targets = {}
        for method in METHODS:
            name = f"cascade_{edit_name}_{method}"
            g, off = res[(edit_name, method)]
            g2, _ = res2[(edit_name, method)]
            moved = [rel_l2(g["image"][b], off["image"][b]) for b in range(1, len(g["prompts"]))]
            assert min(moved) > 1e-2, (name, moved)
            targets[method] = g["image"][1:]
            noise = {"inversion": rel_l2(g2["traj"], g["traj"]), "sr_inversion": rel_l2(g2["traj_sr"], g["traj_sr"]),
                     "base": rel_l2(g2["base"], g["base"]), "sr": rel_l2(g2["sr"], g["sr"]),
                     "image": rel_l2(g2["image"], g["image"])}
            for k, v in noise.items():
                assert v < TOL[k] / 10, (name, k, v)
            source_vs_picture = rel_l2(g["sr"][:1], full)
            if method == "direct":
                assert source_vs_picture < 1e-6, (name, source_vs_picture)
            tensors = {"inversion_latents": g["traj"][:, 0], "sr_inversion_latents": g["traj_sr"][:, 0],
                       "base": g["base"], "sr": g["sr"], "image": g["image"]}
            tensors = {k: v.detach().contiguous().float() for k, v in tensors.items()}
            fname = f"{name}.safetensors"
            save_file(tensors, str(OUT / fname), metadata={"format": "pt"})
            spec = g["spec"]
            cases.append({
                "case": name, "file": fname, "edit": edit_name, "method": method, "prompts": g["prompts"],
                "spec": {"prompt": spec.prompt, "swaps": [list(s) for s in spec.swaps], "targets": list(spec.targets),
                         "reweights": [[w, float(f)] for w, f in spec.reweights], "blend_words": list(spec.blend_words),
                         "blend_threshold": float(spec.blend_threshold), "cross_steps": spec.cross_steps,
                         "self_steps": spec.self_steps, "steps": STEPS, "sr_steps": SR_STEPS, "guidance": GUIDANCE},
                "checks": {"target_image_vs_controller_off_rel_l2": moved,
                           "source_sr_vs_full_picture_rel_l2": source_vs_picture,
                           "reference_noise_1_vs_2_threads_rel_l2": noise},
            })
        for a in METHODS:
            for b in METHODS:
                if a < b:
                    d = rel_l2(targets[a], targets[b])
                    assert d > 1e-2, (edit_name, a, b, d)
                    for c in cases:
                        if c["edit"] == edit_name:
                            c["checks"].setdefault("method_target_distance_rel_l2", {})[f"{a}|{b}"] = d
    save_file({"aug_noise": aug_noise.contiguous()}, str(OUT / "cascade_aug_noise.safetensors"),
              metadata={"format": "pt"})
    manifest = {
        "format": 1,
        "generator": "weights-tools/make_cascade_inversion_fixtures.py (edits by weights-tools/ptp_reference.py)",
        "regenerate": REGENERATE,
        "model": "tests/fixtures/cascade-tiny",
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__, "numpy": np.__version__},
        "inputs": "cascade_full.png 32x32 and cascade_base.png 8x8 (PIL BICUBIC of it), both x/127.5-1; "
                  "cascade_aug_noise.safetensors `aug_noise` [1,3,32,32] (torch seed 7)",
        "tensors": {
            "inversion_latents": "F32 [S+1,3,8,8]: base DDIM inversion x_0 (base picture) ... x_S",
            "sr_inversion_latents": "F32 [S_sr+1,3,32,32]: SR DDIM inversion y_0 (full picture) ... y_S",
            "base": "F32 [B,3,8,8]: the edited base stage's final samples",
            "sr": "F32 [B,3,32,32]: the SR stage's final samples",
            "image": "F32 [B,3,32,32]: images in [0,1]",
        },
        "tolerances": TOL,
        "cases": cases,
    }
    (OUT / "cascade-manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {len(cases)} cascade cases to {OUT}")


if __name__ == "__main__":
    main()
