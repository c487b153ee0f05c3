#!/usr/bin/env python3
"""Real-image editing parity fixtures for p2p-wgpu: tests/fixtures/inversion/*.safetensors + manifest.json.

Our own script (p2p-wgpu project), a PyTorch port of docs/DESIGN.md §5 "Real images": the input picture encoded
with the VAE encoder's mean times scaling_factor, DDIM inversion as the null-text notebook's `ddim_loop` /
`next_step` (source prompt only, guidance 1, ascending DDIM timesteps, ε at the destination timestep, v-prediction
converted with the source level's alpha, never clipped), then Prompt-to-Prompt (weights-tools/ptp_reference.py) from
the inverted x_S with one of three methods:

  ddim             the edit starts from x_S, nothing else changes;
  negative-prompt  every row's unconditional prompt is the source prompt (Miyake et al.);
  direct           after every scheduler step, before local blending, the offset x*_{t-1} - x_src is added to the
                   source row only (Ju et al., "PnP Inversion"), which pins it to the inversion's latents.

Regenerate (about a minute on 2 CPU cores), from the repository root:

    weights-tools/.venv/bin/python weights-tools/make_inversion_fixtures.py

Checks before anything is written: our inversion loop equals diffusers' DDIMInverseScheduler driven the same way;
every edit moves each target (relative L2 of the image against the same method with the controller off) by more
than 1e-2; the three methods give targets that differ by more than 1e-2; and the reference's own float noise (the
same case at 1 and 2 threads) is recorded and must stay below a tenth of the Rust test's tolerances.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

import diffusers
import safetensors
import transformers
from diffusers import DDIMInverseScheduler, DDIMScheduler, StableDiffusionPipeline
from diffusers.models.attention_processor import AttnProcessor

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ptp_reference as ptp  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests/fixtures/inversion"
REGENERATE = "weights-tools/.venv/bin/python weights-tools/make_inversion_fixtures.py"
MODELS = {"sd1": "tests/fixtures/sd1-tiny", "sd2": "tests/fixtures/sd2-tiny"}
STEPS = 5
GUIDANCE = 7.5
METHODS = ["ddim", "negative-prompt", "direct"]
MIN_EDIT_REL_L2 = 1e-2
MIN_METHOD_REL_L2 = 1e-2
# The Rust test's tolerances (relative L2): the reference's own 1-vs-2-thread noise must stay below a tenth of them.
TOL = {"inversion": 1e-4, "source": 1e-4, "final_latents": 2e-3, "image": 1e-3}

EDITS = [
    ("swap", dict(prompt="a red bicycle on a hill", swaps=[("bicycle", "car")], cross_steps="0.8",
                  self_steps="0.4")),
    ("refine", dict(prompt="a castle on a hill", targets=["a watercolor painting of a castle on a hill"],
                    cross_steps="0.8", self_steps="0.4")),
    ("reweight_blend", dict(prompt="a fluffy red ball", reweights=[("fluffy", 3.0)], blend_words=["ball"],
                            blend_threshold=0.3, cross_steps="0.8", self_steps="0.4")),
]


def input_picture() -> np.ndarray:
    """A 16x16 RGB8 picture the models never made: a sky-to-grass gradient with a red disc and a dark square."""
    y, x = np.mgrid[0:16, 0:16].astype(np.float64)
    img = np.zeros((16, 16, 3))
    img[..., 0] = 90 + 4 * y
    img[..., 1] = 140 + 5 * y - 2 * x
    img[..., 2] = 230 - 9 * y
    disc = (x - 10.0) ** 2 + (y - 6.0) ** 2 <= 12.0
    img[disc] = [220, 30, 40]
    img[11:15, 2:6] = [30, 35, 50]
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def load(model: str) -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline.from_pretrained(
        str(REPO / model), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.eval()
    return pipe


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@torch.no_grad()
def encode_picture(pipe, rgb8: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(rgb8).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    return pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor


@torch.no_grad()
def ddim_invert(pipe, prompt: str, x0: torch.Tensor, steps: int) -> torch.Tensor:
    """x_0 ... x_S, [S+1, 1, C, h, w]: the notebook's ddim_loop with the model's DDIM schedule."""
    pipe.unet.set_attn_processor(AttnProcessor())
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(steps)
    acp, final = sched.alphas_cumprod, sched.final_alpha_cumprod
    ratio = sched.config.num_train_timesteps // steps
    v_pred = sched.config.prediction_type == "v_prediction"
    _, emb = ptp.encode(pipe.tokenizer, pipe.text_encoder, [prompt])
    x, out = x0, [x0]
    for t in reversed(sched.timesteps):
        o = pipe.unet(x, t, encoder_hidden_states=emb).sample
        t_from = int(t) - ratio
        a_from = acp[t_from] if t_from >= 0 else final
        a_to = acp[int(t)]
        if v_pred:
            x0_pred = a_from ** 0.5 * x - (1 - a_from) ** 0.5 * o
            eps = a_from ** 0.5 * o + (1 - a_from) ** 0.5 * x
        else:
            eps = o
            x0_pred = (x - (1 - a_from) ** 0.5 * eps) / a_from ** 0.5
        x = a_to ** 0.5 * x0_pred + (1 - a_to) ** 0.5 * eps
        out.append(x)
    return torch.stack(out)


@torch.no_grad()
def diffusers_invert(pipe, prompt: str, x0: torch.Tensor, steps: int) -> torch.Tensor:
    """The same with diffusers' DDIMInverseScheduler (a cross-check of the convention)."""
    pipe.unet.set_attn_processor(AttnProcessor())
    inv = DDIMInverseScheduler.from_config(pipe.scheduler.config, clip_sample=False)
    inv.set_timesteps(steps)
    _, emb = ptp.encode(pipe.tokenizer, pipe.text_encoder, [prompt])
    x, out = x0, [x0]
    for t in inv.timesteps:
        o = pipe.unet(x, t, encoder_hidden_states=emb).sample
        x = inv.step(o, t, x).prev_sample
        out.append(x)
    return torch.stack(out)


def edit(pipe, plan, traj: torch.Tensor, method: str, blend_res: int, on: bool = True) -> dict:
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    return ptp.generate(pipe, plan.prompts, traj[-1], sched, STEPS, GUIDANCE, plan=plan,
                        blend_res=blend_res if plan.blend_positions else None,
                        negative=plan.prompts[0] if method == "negative-prompt" else "",
                        edit=on, pin=traj if method == "direct" else None)


def run_model(key: str, model: str, rgb8: np.ndarray) -> list:
    pipe = load(model)
    tok = pipe.tokenizer
    blend_res = ptp.default_blend_res(pipe.unet, 8)
    x0 = encode_picture(pipe, rgb8)
    cases = []
    for edit_name, fields in EDITS:
        spec = ptp.EditSpec(**fields)
        plan = ptp.build_plan(spec, tok, STEPS)
        traj = ddim_invert(pipe, spec.prompt, x0, STEPS)
        cross = rel_l2(diffusers_invert(pipe, spec.prompt, x0, STEPS), traj)
        assert cross < 1e-6, (key, edit_name, cross)
        targets = {}
        for method in METHODS:
            name = f"{key}_{edit_name}_{method}"
            g = edit(pipe, plan, traj, method, blend_res)
            off = edit(pipe, plan, traj, method, blend_res, on=False)
            moved = [rel_l2(g["image"][b], off["image"][b]) for b in range(1, len(plan.prompts))]
            assert min(moved) > MIN_EDIT_REL_L2, (name, moved)
            targets[method] = g["final_latents"][1:]
            # the reference's own noise: the same case at 2 threads
            torch.set_num_threads(2)
            traj2 = ddim_invert(pipe, spec.prompt, x0, STEPS)
            g2 = edit(pipe, plan, traj2, method, blend_res)
            torch.set_num_threads(1)
            noise = {
                "inversion": rel_l2(traj2, traj),
                "final_latents": rel_l2(g2["final_latents"], g["final_latents"]),
                "image": rel_l2(g2["image"], g["image"]),
            }
            for k, v in noise.items():
                assert v < TOL[k] / 10, (name, k, v)
            source_vs_inversion = rel_l2(g["final_latents"][:1], traj[0])
            if method == "direct":
                assert source_vs_inversion < 1e-6, (name, source_vs_inversion)
            tensors = {
                "inversion_latents": traj[:, 0],
                "final_latents": g["final_latents"],
                "step_latents": g["step_latents"],
                "image": g["image"],
            }
            tensors = {k: v.detach().contiguous().float() for k, v in tensors.items()}
            fname = f"{name}.safetensors"
            save_file(tensors, str(OUT / fname), metadata={"format": "pt"})
            cases.append({
                "case": name,
                "file": fname,
                "model": model,
                "edit": edit_name,
                "method": method,
                "spec": {"prompt": spec.prompt, "swaps": [list(s) for s in spec.swaps], "targets": list(spec.targets),
                         "reweights": [[w, float(f)] for w, f in spec.reweights], "blend_words": list(spec.blend_words),
                         "blend_threshold": float(spec.blend_threshold), "cross_steps": spec.cross_steps,
                         "self_steps": spec.self_steps, "steps": STEPS, "guidance": GUIDANCE, "blend_res": blend_res},
                "prompts": plan.prompts,
                "checks": {
                    "ours_vs_diffusers_DDIMInverseScheduler_rel_l2": cross,
                    "target_image_vs_controller_off_rel_l2": moved,
                    "source_final_vs_encoded_image_rel_l2": source_vs_inversion,
                    "reference_noise_1_vs_2_threads_rel_l2": noise,
                },
            })
        for a in METHODS:
            for b in METHODS:
                if a < b:
                    d = rel_l2(targets[a], targets[b])
                    assert d > MIN_METHOD_REL_L2, (key, edit_name, a, b, d)
                    for c in cases:
                        if c["edit"] == edit_name and c["model"] == model:
                            c["checks"].setdefault("method_target_distance_rel_l2", {})[f"{a}|{b}"] = d
    tensors = {"encoded": x0.detach().contiguous()}
    save_file(tensors, str(OUT / f"{key}_encoded.safetensors"), metadata={"format": "pt"})
    return cases


def main() -> None:
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    rgb8 = input_picture()
    Image.fromarray(rgb8, "RGB").save(OUT / "input.png")
    cases = []
    for key, model in MODELS.items():
        cases += run_model(key, model, rgb8)
    manifest = {
        "format": 1,
        "generator": "weights-tools/make_inversion_fixtures.py (edits by weights-tools/ptp_reference.py)",
        "regenerate": REGENERATE,
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__, "safetensors": safetensors.__version__,
                     "numpy": np.__version__},
        "input": "input.png: 16x16 RGB8 (input_picture()); encoded = vae.encode(x/127.5-1).latent_dist.mean * "
                 "scaling_factor, in <model>_encoded.safetensors `encoded` [1,4,8,8]",
        "tensors": {
            "inversion_latents": "F32 [S+1,4,8,8]: x_0 (encoded) ... x_S of the DDIM inversion of the source prompt",
            "final_latents": "F32 [B,4,8,8]: the edit's final latents (row 0 source)",
            "step_latents": "F32 [S,B,4,8,8]: latents after every step (pin and blend included)",
            "image": "F32 [B,3,16,16]: decoded final latents in [0,1]",
        },
        "tolerances": TOL,
        "cases": cases,
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
