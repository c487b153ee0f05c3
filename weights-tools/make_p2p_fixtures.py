#!/usr/bin/env python3
"""Prompt-to-Prompt parity fixtures for p2p-wgpu: tests/fixtures/p2p/*.safetensors + manifest.json.

Our own script (p2p-wgpu project). Every edit runs through weights-tools/ptp_reference.py, our PyTorch port of
docs/DESIGN.md §4/§5 (the google/prompt-to-prompt semantics), on the tiny SD 1.x model tests/fixtures/sd1-tiny
(8x8 latents, 16x16 images; its attn2 q/k weights are scaled by 6 so the cross-attention maps are sharp).

Regenerate (about 10 s on 2 CPU cores, byte-identical on every run), from the repository root:

    weights-tools/.venv/bin/python weights-tools/make_p2p_fixtures.py

Before writing anything it checks the port:
  (a) with the controller off, our loop + our explicit-probability processors reproduce diffusers'
      StableDiffusionPipeline (tests/fixtures/reference/sd1-tiny_t2i_pndm4.safetensors and _ddim4) within 1e-5 on
      the image and 2e-6 relative L2 on the final latents, and bit-exactly when the stock diffusers processor is
      used in the same loop; our processor equals diffusers' own AttnProcessor bit for bit;
  (b) in every case the source row (row 0) of the edit equals the plain generation: bit for bit the same batch
      run with the controller off (`plain_*` tensors), and within batch-size rounding (relative L2 < 1e-5 on the
      final latents, < 1e-5 max |diff| on the image) the source prompt generated alone with B = 1; every plain row
      is also checked against its prompt generated alone. The numbers are in each case's `checks`;
and that every edit moves each target by more than 1e-2 relative L2 (image) away from that target's plain
generation. Each case's numbers are in the manifest.
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
from safetensors.torch import load_file, save_file

import diffusers
import safetensors
import transformers
from diffusers import DDIMScheduler, PNDMScheduler, StableDiffusionPipeline
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ptp_reference as ptp  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODEL = "tests/fixtures/sd1-tiny"
REGENERATE = "weights-tools/.venv/bin/python weights-tools/make_p2p_fixtures.py"
STEPS = 5
GUIDANCE = 7.5
SEED_BASE = 3000
MIN_EDIT_REL_L2 = 1e-2
SOURCE_TOL = 1e-5

BIKE = "a red bicycle on a hill"
CASTLE = "a castle on a hill"
CASTLE_WC = "a watercolor painting of a castle on a hill"
BALL = "a fluffy red ball"
DOG = "a dog on the grass"

# (name, EditSpec fields, scheduler[, options]); options: "seed" (else SEED_BASE + index + 1), "blend_res"
# (else the model's default, 4). Case 2's seed was picked so that the target's own blend mask differs from the
# source's in the last steps (the OR matters) with a comfortable margin to the threshold.
CASES = [
    ("01_swap", dict(prompt=BIKE, swaps=[("bicycle", "car")], cross_steps="0.8", self_steps="0.4"), "pndm"),
    ("02_swap_word_window_blend",
     dict(prompt=BIKE, swaps=[("bicycle", "car")], cross_steps="0.8", self_steps="0.4",
          cross_steps_word=[("red", "0.2:0.6")], blend_words=["bicycle", "car"], blend_threshold=0.3), "pndm",
     {"seed": 3010}),
    ("03_refine", dict(prompt=CASTLE, targets=[CASTLE_WC], cross_steps="0.8", self_steps="0.4"), "pndm"),
    ("04_reweight", dict(prompt=BALL, reweights=[("fluffy", 3.0)], cross_steps="0.8", self_steps="0.4"), "pndm"),
    ("05_refine_reweight",
     dict(prompt=CASTLE, targets=[CASTLE_WC], reweights=[("watercolor", 4.0)], cross_steps="0.8",
          self_steps="0.4"), "pndm"),
    ("06_reweight_negative_blend",
     dict(prompt=BALL, reweights=[("fluffy", -2.0)], blend_words=["red"], blend_threshold=0.3, blend_start=0.2,
          cross_steps="0.8", self_steps="0.4"), "pndm"),
    ("07_swap_ddim", dict(prompt=BIKE, swaps=[("bicycle", "car")], cross_steps="0.8", self_steps="0.4"), "ddim"),
    ("08a_swap_length_compat_ptp",
     dict(prompt=DOG, swaps=[("dog", "hippopotamus")], cross_steps="0.8", self_steps="0.4", compat_ptp=True), "pndm"),
    ("08b_swap_length_corrected",
     dict(prompt=DOG, swaps=[("dog", "hippopotamus")], cross_steps="0.8", self_steps="0.4"), "pndm",
     {"seed": 3008}),  # the same latents as 08a, so the two differ only by the mapper
    ("09_three_prompts",
     dict(prompt=BIKE, swaps=[("bicycle", "car")], targets=["a blue bicycle on a hill"], cross_steps="0.8",
          self_steps="0.4"), "pndm"),
    ("10_windows_range",
     dict(prompt=BIKE, swaps=[("bicycle", "car")], cross_steps="0.3:0.9", self_steps="0.2:0.6"), "pndm"),
    # extra: case 2's edit with the blend store on the five 8x8 cross layers (2 down + 3 up, like SD's five 16x16
    # ones) instead of the single 4x4 mid-block layer; identity upsample
    ("11_blend_res8",
     dict(prompt=BIKE, swaps=[("bicycle", "car")], cross_steps="0.8", self_steps="0.4",
          cross_steps_word=[("red", "0.2:0.6")], blend_words=["bicycle", "car"], blend_threshold=0.3), "pndm",
     {"seed": 3009, "blend_res": 8}),
]

TENSOR_DOCS = {
    "latents": "F32 [1,4,8,8]: the initial latents shared by every prompt (seeded randn; init_noise_sigma = 1)",
    "input_ids": "I32 [B,77]: the prompts' token ids (row 0 source), padding='max_length', truncation",
    "final_latents": "F32 [B,4,8,8]: latents after the last scheduler step (and blend), row 0 = source",
    "step_latents": "F32 [E,B,4,8,8]: latents after every scheduler step (and its blend); E = UNet evaluations",
    "image": "F32 [B,3,16,16]: (vae.decode(final_latents / scaling_factor).sample / 2 + 0.5).clamp(0,1)",
    "plain_final_latents": "F32 [B,4,8,8]: the unedited generation of each prompt: the same batch with the "
                           "controller off (rows are independent; equal to each prompt run alone with B = 1 up to "
                           "batch-size rounding, see checks.plain_batch_vs_alone_*)",
    "plain_image": "F32 [B,3,16,16]: the image of plain_final_latents",
    "mapper": "F32 [T,77,77]: dense W per target; W[t, w, n] = weight of source token w for target token n",
    "r": "F32 [T,77]: the target's own-probability weight (refine: 1 - a; swap/reweight: 0)",
    "eq": "F32 [T,77]: reweight factors (1 elsewhere), on the target's word positions",
    "alpha": "F32 [S+1,T,77]: cross window table; row = UNet evaluation index",
    "self_window": "I32 [2]: self-attention injection on evaluations [start, end)",
    "blend_mask_last": "F32 [B,1,8,8]: the local-blend mask (0/1) of the last blended step; row 0 = the source's "
                       "own mask, rows b>=1 = target b's mask OR the source's",
}


def set_determinism() -> None:
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)


def load_pipeline() -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline.from_pretrained(
        str(REPO / MODEL), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.eval()
    return pipe


def make_scheduler(pipe, kind: str):
    cls = PNDMScheduler if kind == "pndm" else DDIMScheduler
    return cls.from_config(pipe.scheduler.config)


def randn(shape, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


# --------------------------------------------------------------------------------------------------------------
# check (a)


def check_plain(pipe) -> dict:
    """Controller off: our loop and processors against the stored diffusers pipeline references."""
    out = {}
    real_install = ptp.install
    for label in ("pndm", "ddim"):
        ref = load_file(str(REPO / f"tests/fixtures/reference/sd1-tiny_t2i_{label}4.safetensors"))
        man = json.loads((REPO / "tests/fixtures/reference/manifest.json").read_text())
        entry = next(f for f in man["files"] if f["file"] == f"sd1-tiny_t2i_{label}4.safetensors")
        res = {}
        for proc_name, proc in (("ptp_reference (explicit f32 probabilities)", None),
                                ("diffusers AttnProcessor (explicit)", AttnProcessor),
                                ("diffusers AttnProcessor2_0 (SDPA, the pipeline's default)", AttnProcessor2_0)):
            if proc is not None:
                ptp.install = lambda unet, ctl, proc=proc: unet.set_attn_processor(proc())
            try:
                g = ptp.generate(pipe, [entry["prompt"]], ref["latents"], make_scheduler(pipe, label),
                                 entry["steps"], entry["guidance_scale"])
            finally:
                ptp.install = real_install
            assert g["timesteps"] == entry["timesteps"]
            res[proc_name] = {
                "final_latents_max_abs": max_abs(g["final_latents"], ref["final_latents"]),
                "final_latents_rel_l2": rel_l2(g["final_latents"], ref["final_latents"]),
                "image_max_abs": max_abs(g["image"], ref["image"]),
                "_final": g["final_latents"],
            }
        ours = res["ptp_reference (explicit f32 probabilities)"]
        stock = res["diffusers AttnProcessor (explicit)"]
        sdpa = res["diffusers AttnProcessor2_0 (SDPA, the pipeline's default)"]
        assert torch.equal(ours["_final"], stock["_final"]), "our processor differs from diffusers' AttnProcessor"
        assert sdpa["final_latents_max_abs"] == 0.0 and sdpa["image_max_abs"] == 0.0, sdpa
        assert ours["image_max_abs"] < 1e-5 and ours["final_latents_rel_l2"] < 2e-6, ours
        for v in res.values():
            v.pop("_final")
        out[f"sd1-tiny_t2i_{label}4"] = res
    return out


# --------------------------------------------------------------------------------------------------------------
# cases


def cli_string(spec: dict, sched: str, seed: int, case_file: str, blend_res: int | None = None) -> str:
    parts = ["p2p-wgpu", "--model", MODEL, json.dumps(spec["prompt"])]
    for old, new in spec.get("swaps", []):
        parts += ["--swap", f"{old}={new}"]
    for t in spec.get("targets", []):
        parts += ["--target", json.dumps(t)]
    if spec.get("mode"):
        parts += ["--mode", spec["mode"]]
    for w, f in spec.get("reweights", []):
        parts += ["--reweight", f"{w}={f:g}"]
    if spec.get("blend_words"):
        parts += ["--blend", ",".join(spec["blend_words"]), "--blend-threshold", f"{spec.get('blend_threshold', 0.3):g}"]
        if spec.get("blend_start", 0.0):
            parts += ["--blend-start", f"{spec['blend_start']:g}"]
        if blend_res is not None:
            parts += ["--blend-res", str(blend_res)]  # not a user option: the test sets the store resolution
    parts += ["--cross-steps", str(spec.get("cross_steps", "0.8"))]
    for w, win in spec.get("cross_steps_word", []):
        parts += ["--cross-steps-word", f"{w}={win}"]
    parts += ["--self-steps", str(spec.get("self_steps", "0.4"))]
    if spec.get("compat_ptp"):
        parts += ["--compat", "ptp"]
    parts += ["--scheduler", sched, "--steps", str(STEPS), "--guidance", f"{GUIDANCE:g}",
              "--latents", f"tests/fixtures/p2p/{case_file}"]
    return " ".join(parts)


def run_case(pipe, tok, name: str, fields: dict, sched: str, seed: int, blend_res: int, default_res: int,
             out_dir: Path) -> dict:
    spec = ptp.EditSpec(**fields)
    plan = ptp.build_plan(spec, tok, STEPS)
    B, T = len(plan.prompts), len(plan.prompts) - 1
    latents = randn((1, 4, 8, 8), seed)
    g = ptp.generate(pipe, plan.prompts, latents, make_scheduler(pipe, sched), STEPS, GUIDANCE, plan=plan,
                     blend_res=blend_res)
    # plain generation: the same batch with the controller off (rows are independent, so row b is prompt b's plain
    # generation), and each prompt alone (B = 1), which differs from it only by batch-size rounding
    plain = ptp.generate(pipe, plan.prompts, latents, make_scheduler(pipe, sched), STEPS, GUIDANCE, plan=plan,
                         blend_res=blend_res, edit=False)
    plain_final, plain_image = plain["final_latents"], plain["image"]
    alone = [ptp.generate(pipe, [p], latents, make_scheduler(pipe, sched), STEPS, GUIDANCE) for p in plan.prompts]
    alone_final = torch.cat([a["final_latents"] for a in alone])
    alone_image = torch.cat([a["image"] for a in alone])
    alone_rel = max(rel_l2(plain_final[b], alone_final[b]) for b in range(B))
    alone_img = max_abs(plain_image, alone_image)
    assert alone_rel < 1e-5 and alone_img < 1e-5, (name, alone_rel, alone_img)

    # (b) the source row is the plain generation
    src_lat = max_abs(g["final_latents"][0], plain_final[0])
    src_img = max_abs(g["image"][0], plain_image[0])
    assert src_lat == 0.0 and src_img == 0.0, (name, src_lat, src_img)
    src_alone_lat = rel_l2(g["final_latents"][0], alone_final[0])
    src_alone_img = max_abs(g["image"][0], alone_image[0])
    assert src_alone_lat < 1e-5 and src_alone_img < SOURCE_TOL, (name, src_alone_lat, src_alone_img)
    edit_vs_plain = [rel_l2(g["image"][b], plain_image[b]) for b in range(1, B)]
    edit_vs_plain_lat = [rel_l2(g["final_latents"][b], plain_final[b]) for b in range(1, B)]
    target_vs_source = [rel_l2(g["image"][b], g["image"][0]) for b in range(1, B)]
    plain_target_vs_source = [rel_l2(plain_image[b], plain_image[0]) for b in range(1, B)]
    assert min(edit_vs_plain) > MIN_EDIT_REL_L2, (name, edit_vs_plain)

    tensors = {
        "latents": latents,
        "input_ids": g["input_ids"].to(torch.int32),
        "final_latents": g["final_latents"],
        "step_latents": g["step_latents"],
        "image": g["image"],
        "plain_final_latents": plain_final,
        "plain_image": plain_image,
        "mapper": torch.from_numpy(plan.mapper),
        "r": torch.from_numpy(plan.r),
        "eq": torch.from_numpy(plan.eq),
        "alpha": torch.from_numpy(plan.alpha),
        "self_window": torch.tensor(plan.self_window, dtype=torch.int32),
    }
    blend = None
    if plan.blend_positions is not None:
        tensors["blend_mask_last"] = g["blend_mask_last"]
        info = g["blend_info"]
        blend = {
            "words": fields["blend_words"],
            "threshold": plan.blend_threshold,
            "start": fields.get("blend_start", 0.0),
            "start_step": plan.blend_start_step,
            "blend_res": blend_res,
            "store_layers": g["store_layers"],
            "blended_evaluations": [d["eval"] for d in info],
            "mask_cells_per_step": [d["mask_cells"] for d in info],
            "own_mask_cells_per_step": [d["own_mask_cells"] for d in info],
            "min_margin_to_threshold": min(d["margin"] for d in info),
        }
    fname = f"{name}.safetensors"
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    for k, v in tensors.items():
        assert v.dtype in (torch.float32, torch.int32), (k, v.dtype)
        assert torch.isfinite(v.float()).all(), (name, k)
    save_file(tensors, str(out_dir / fname), metadata={"format": "pt"})

    spec_json = {
        "prompt": spec.prompt,
        "swaps": [list(s) for s in spec.swaps],
        "targets": list(spec.targets),
        "mode": spec.mode,
        "reweights": [[w, float(f)] for w, f in spec.reweights],
        "blend_words": list(spec.blend_words),
        "blend_threshold": float(spec.blend_threshold),
        "blend_start": float(spec.blend_start),
        "cross_steps": str(spec.cross_steps),
        "cross_steps_word": [[w, str(win)] for w, win in spec.cross_steps_word],
        "self_steps": str(spec.self_steps),
        "compat_ptp": bool(spec.compat_ptp),
        "scheduler": sched,
        "steps": STEPS,
        "guidance": GUIDANCE,
        "negative_prompt": "",
        "latents_seed": seed,
        "latents": "the file's `latents` tensor (torch.randn([1,4,8,8], Generator().manual_seed(latents_seed)))",
        "self_max_queries": ptp.SELF_MAX_QUERIES,
        "blend_res": blend_res if spec.blend_words else None,
    }
    return {
        "file": fname,
        "case": name,
        "spec": spec_json,
        "cli": cli_string(fields | {"cross_steps": spec.cross_steps, "self_steps": spec.self_steps}, sched, seed,
                          fname, blend_res if (spec.blend_words and blend_res != default_res) else None),
        "resolved": {
            "prompts": plan.prompts,
            "mode": plan.mode,
            "batch": B,
            "targets": T,
            "timesteps": g["timesteps"],
            "unet_evaluations": len(g["timesteps"]),
            "cross_window_rows": list(ptp.window_rows(ptp.parse_window(spec.cross_steps), STEPS + 1)),
            "self_window": list(plan.self_window),
            "blend_positions": plan.blend_positions,
        },
        "blend": blend,
        "checks": {
            "source_vs_plain_final_latents_max_abs": src_lat,
            "source_vs_plain_image_max_abs": src_img,
            "source_vs_alone_final_latents_rel_l2": src_alone_lat,
            "source_vs_alone_image_max_abs": src_alone_img,
            "plain_batch_vs_alone_final_latents_max_rel_l2": alone_rel,
            "plain_batch_vs_alone_image_max_abs": alone_img,
            "edit_vs_plain_target_image_rel_l2": [round(v, 6) for v in edit_vs_plain],
            "edit_vs_plain_target_final_latents_rel_l2": [round(v, 6) for v in edit_vs_plain_lat],
            "edited_target_vs_source_image_rel_l2": [round(v, 6) for v in target_vs_source],
            "plain_target_vs_plain_source_image_rel_l2": [round(v, 6) for v in plain_target_vs_source],
        },
        "tensors": {k: {"dtype": "I32" if v.dtype == torch.int32 else "F32", "shape": list(v.shape),
                        "max_abs": round(float(v.double().abs().max()), 6)} for k, v in tensors.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(REPO / "tests" / "fixtures" / "p2p"))
    args = ap.parse_args()
    t0 = time.time()
    set_determinism()
    pipe = load_pipeline()
    tok = pipe.tokenizer
    plain_check = check_plain(pipe)
    blend_res = ptp.default_blend_res(pipe.unet, 8)
    sides = ptp.cross_attention_sides(pipe.unet, (8, 8))

    out_dir = Path(args.out)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    entries = []
    for k, (name, fields, sched, *rest) in enumerate(CASES):
        opts = rest[0] if rest else {}
        e = run_case(pipe, tok, name, fields, sched, opts.get("seed", SEED_BASE + k + 1),
                     opts.get("blend_res", blend_res), blend_res, out_dir)
        entries.append(e)
        c = e["checks"]
        print(f"{name}: B={e['resolved']['batch']} mode={e['resolved']['mode']} "
              f"edit-vs-plain {c['edit_vs_plain_target_image_rel_l2']} "
              f"source max|d| {c['source_vs_plain_final_latents_max_abs']:.1e}"
              + (f" blend margin {e['blend']['min_margin_to_threshold']:.3g} cells "
                 f"{e['blend']['mask_cells_per_step']}" if e["blend"] else ""), flush=True)

    fa = load_file(str(out_dir / "08a_swap_length_compat_ptp.safetensors"))
    fb = load_file(str(out_dir / "08b_swap_length_corrected.safetensors"))
    compat_diff = {"cases": ["08a_swap_length_compat_ptp", "08b_swap_length_corrected"],
                   "target_image_rel_l2": round(rel_l2(fa["image"][1], fb["image"][1]), 6),
                   "target_final_latents_rel_l2": round(rel_l2(fa["final_latents"][1], fb["final_latents"][1]), 6)}
    assert compat_diff["target_image_rel_l2"] > MIN_EDIT_REL_L2, compat_diff

    manifest = {
        "format": 1,
        "generator": "weights-tools/make_p2p_fixtures.py (edits by weights-tools/ptp_reference.py, our port of "
                     "docs/DESIGN.md §5)",
        "regenerate": REGENERATE,
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__, "safetensors": safetensors.__version__,
                     "numpy": np.__version__},
        "model": MODEL,
        "latent_size": [8, 8],
        "image_size": [16, 16],
        "keys": ptp.MAX_LEN,
        "cross_attention_sides": sides,
        "tensors": TENSOR_DOCS,
        "conventions": {
            "batch": "B = 1 + T prompts: row 0 the source, rows 1..T the targets (swap target first, then --target "
                     "prompts, in order); the UNet batch is [uncond x B, cond x B] with negative prompt ''",
            "edit": "cond rows of targets only: E = eq*(P_s.W + r*P_b); P' = alpha[eval]*E + (1-alpha[eval])*P_b; "
                    "self layers with <= self_max_queries query tokens inside the self window: P'_b = P_s",
            "evaluation_index": "0-based UNet call index (PNDM with S steps makes S+1 calls; DDIM S)",
            "cross_window": "rows [int(s*(S+1)), int(e*(S+1))) of alpha are 1; per-word windows override the "
                            "target's word columns",
            "self_window": "evaluations [int(s*S), int(e*S))",
            "blend": "store = running sum over evaluations (current included) of the sum over the blend_res^2-query "
                     "cross layers of the head-mean of the EDITED cond maps; map = sum over the prompt's "
                     "blend_positions / number of store layers; 3x3 max-pool stride 1 pad 1; nearest upsample to "
                     "8x8; / own max; > threshold; target mask |= source mask; after scheduler steps with index >= "
                     "start_step: x_b = x_src + mask_b*(x_b - x_src)",
            "blend_res": f"{blend_res}: the tiny UNet has cross attention only at sides {sides}; latent side / 4 = 2 "
                         f"does not exist, so the smallest side >= 2 is used (the rule gives 16 for SD at 64x64); "
                         f"case 11 sets 8 (the five 8x8 layers) to exercise the sum over several store layers; "
                         f"each case's blend.blend_res is the value used",
            "replacement_mapper": "corrected by default (after the last changed word source i -> target j); "
                                  "compat_ptp reproduces the reference's j -> j",
            "refinement": "Needleman-Wunsch on token ids with BOS/EOS; gap 0, match 1, mismatch -1; ties: "
                          "insertion, deletion, diagonal; W[m[n], n] = a[n], r = 1 - a; padding n -> n, a = 1",
            "reweight_only": "target = source prompt, W = identity, r = 0",
            "decode": "image = (vae.decode(final_latents / 0.18215).sample / 2 + 0.5).clamp(0, 1), f32",
        },
        "tolerances": {
            "source_row": "row 0 equals plain row 0 bit for bit, and the source generated alone (B = 1) within "
                          f"relative L2 1e-5 (final latents) and max |diff| {SOURCE_TOL} (image)",
            "edits": f"every target's image differs from its plain generation by > {MIN_EDIT_REL_L2} relative L2",
        },
        "check_plain_vs_diffusers": plain_check,
        "check_compat_ptp_matters": compat_diff,
        "cases": entries,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(p.stat().st_size for p in out_dir.iterdir())
    print(f"done in {time.time() - t0:.1f}s: {len(entries)} cases, {total / 1024:.0f} KiB in {out_dir}")


if __name__ == "__main__":
    main()
