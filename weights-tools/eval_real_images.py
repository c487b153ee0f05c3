#!/usr/bin/env python3
"""Real-image editing evaluation of p2p-wgpu's default model on drawings of its world that it did not make.

In the spirit of PIE-Bench's background metrics: every scene is drawn by world.py (the picture *and* the exact
object masks), DDIM-inverted with its caption, and edited by each inversion method (ddim, negative-prompt,
direct; docs/DESIGN.md §5 "Real images"). Edits (scene choice and words as eval_edits.py):

| edit | scenes | edited region (excluded from the background metrics) |
|---|---|---|
| colour swap | one object | the object's mask |
| shape swap | one object | the object's mask ∪ the new shape's mask at the same place and size |
| refinement (adds `outlined`) | one filled object | the object's mask |
| swap + local blend (colour of object 1, `--blend <its shape>`) | two objects | object 1's mask (object 2 counts as background) |

Masks are world.py's coverage > 0.01 at the base size, dilated by one pixel. For every target image:

- background PSNR (dB, data range 1), MSE and SSIM (Gaussian window, sigma 1.5, 7x7) outside the edited region, against
  the input picture (SSIM: the SSIM map averaged over the background pixels);
- edit success from the scene analyser (eval_default.py): the new colour found and the old one gone (colour, blend),
  the new shape classified (shape), `outlined` classified (refinement);
- the source row's reconstruction PSNR against the input (whole picture).

Where it runs: the base stage (the stage Prompt-to-Prompt edits; 32x32 on the default model), through
ptp_reference.py and make_inversion_fixtures.ddim_invert, the PyTorch port that the engine matches number for number
(tests/inversion_parity.rs: the SD fixtures and the tiny cascade's base and SR stages). The SR stage is not run: it
upsamples every row the same way, and background preservation is decided in the base. The input is the scene drawn
at the base size (world.render_pooled, 4x supersampled) and stored as 8-bit, as a PNG would hold it.

    weights-tools/.venv/bin/python weights-tools/eval_real_images.py --n 100 --out weights-tools/runs/eval-real.json

This is our own code (p2p-wgpu project).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_edits as ee  # noqa: E402
import make_inversion_fixtures as mif  # noqa: E402
import ptp_reference as ptp  # noqa: E402
import train_default as td  # noqa: E402
import world  # noqa: E402

EDITS = ["colour", "shape", "refine", "blend"]
METHODS = ["ddim", "negative-prompt", "direct"]


def region(scene: dict, edit: str, info: dict, size: int) -> np.ndarray:
    """The edited region (boolean [size, size]), dilated by one pixel."""
    o = scene["objects"][0]
    m = world.object_coverage(o, size) > 0.01
    if edit == "shape":
        m |= world.object_coverage(dict(o, shape=info["new"]), size) > 0.01
    d = m.copy()
    d[1:] |= m[:-1]
    d[:-1] |= m[1:]
    d[:, 1:] |= d[:, :-1].copy()
    d[:, :-1] |= d[:, 1:].copy()
    return d


def gaussian_filter(x: np.ndarray, sigma: float = 1.5, radius: int = 3) -> np.ndarray:
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    p = np.pad(x, radius, mode="reflect")
    p = np.apply_along_axis(lambda r: np.convolve(r, k, mode="valid"), 0, p)
    return np.apply_along_axis(lambda r: np.convolve(r, k, mode="valid"), 1, p)


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM of [H, W, 3] images in [0, 1], averaged over channels (Wang et al. 2004 constants)."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    out = []
    for c in range(3):
        x, y = a[..., c].astype(np.float64), b[..., c].astype(np.float64)
        mx, my = gaussian_filter(x), gaussian_filter(y)
        sxx = gaussian_filter(x * x) - mx * mx
        syy = gaussian_filter(y * y) - my * my
        sxy = gaussian_filter(x * y) - mx * my
        out.append(((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2)))
    return np.mean(out, 0)


PSNR_CAP = 100.0  # dB: an exact reconstruction (MSE 0) counts as this, and the table says "exact"


def psnr(mse: float) -> float:
    return float(min(10 * np.log10(1.0 / max(mse, 1e-30)), PSNR_CAP))


def background(inp: np.ndarray, out: np.ndarray, edited: np.ndarray) -> dict:
    bg = ~edited
    mse = float(((out - inp) ** 2)[bg].mean())
    return {"bg_psnr": psnr(mse), "bg_mse": mse, "bg_ssim": float(ssim_map(inp, out)[bg].mean())}


def success(edit: str, scene: dict, info: dict, inp: np.ndarray, out: np.ndarray) -> dict:
    r = ee.measure(edit, scene, info, inp, out)
    key = {"colour": "new_colour", "blend": "new_colour", "shape": "new_shape", "refine": "outlined"}[edit]
    return {"success": bool(r.get(key, False))}


def summarise(rows: list[dict]) -> dict:
    out = {"n": len(rows)}
    for k in sorted({k for r in rows for k in r}):
        v = [float(r[k]) for r in rows if k in r]
        out[k] = round(float(np.mean(v)), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "models" / "default"))
    ap.add_argument("--n", type=int, default=100, help="scenes per edit")
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--edits", default=",".join(EDITS))
    ap.add_argument("--steps", type=int, default=None, help="default: the model's num_inference_steps")
    ap.add_argument("--guidance", type=float, default=None, help="default: the model's guidance_scale")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write per-scene rows and the summary (json)")
    ap.add_argument("--save-dir", default=None, help="write input | source | edit strips per method here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    m = td.load_exported(args.model)
    args.steps = args.steps or m["index"].get("num_inference_steps", 50)
    args.guidance = args.guidance or m["index"].get("guidance_scale", 5.0)
    pipe = ee._Pipe(m)
    pipe.scheduler = m["sched"]
    max_len = m["tok"].model_max_length
    ptp.MAX_LEN = max_len
    size = pipe.unet.config.sample_size
    blend_res = ptp.default_blend_res(pipe.unet, size)
    t0 = time.time()
    report, rows_all = {}, {}
    for edit in args.edits.split(","):
        rows = {k: [] for k in METHODS}
        for k, (seed, scene, spec, info) in enumerate(ee.scenes_for(edit, args.n, args.start)):
            rgb8 = (np.clip(world.render_pooled(scene, size), 0, 1) * 255 + 0.5).astype(np.uint8)
            inp = rgb8.astype(np.float32) / 255.0
            x0 = torch.from_numpy(rgb8).permute(2, 0, 1)[None].float() / 127.5 - 1.0
            plan = ptp.build_plan(spec, pipe.tokenizer, args.steps, max_len)
            with torch.no_grad():
                traj = mif.ddim_invert(pipe, spec.prompt, x0, args.steps)
            edited = region(scene, edit, info, size)
            strips = [inp]
            for method in METHODS:
                g = ptp.generate(pipe, plan.prompts, traj[-1], DDIMScheduler.from_config(m["sched"].config),
                                 args.steps, args.guidance, plan=plan,
                                 blend_res=blend_res if plan.blend_positions else None,
                                 negative=plan.prompts[0] if method == "negative-prompt" else "",
                                 pin=traj if method == "direct" else None)
                img = g["image"].permute(0, 2, 3, 1).numpy()
                src, out = img[0], img[1]
                row = dict(seed=seed, recon_psnr=psnr(float(((src - inp) ** 2).mean())),
                           **background(inp, out, edited), **success(edit, scene, info, inp, out))
                rows[method].append(row)
                strips += [src, out]
            if args.save_dir:
                Path(args.save_dir).mkdir(parents=True, exist_ok=True)
                world.save_png(f"{args.save_dir}/{edit}-{seed:04d}.png", np.concatenate(strips, 1))
            if (k + 1) % 10 == 0:
                print(f"{edit}: {k + 1}/{args.n} ({time.time() - t0:.0f}s)", flush=True)
        report[edit] = {meth: summarise(rows[meth]) for meth in METHODS}
        rows_all[edit] = rows
        print(edit, json.dumps(report[edit]), flush=True)
    report["_run"] = dict(model=args.model, n=args.n, start=args.start, steps=args.steps, guidance=args.guidance,
                          size=size, blend_res=blend_res, seconds=round(time.time() - t0, 1))
    print(json.dumps(report, indent=1))
    print(table(report))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(dict(summary=report, rows=rows_all), indent=1))


def recon(v: float) -> str:
    return "exact" if v >= PSNR_CAP else f"{v:.2f}"


def table(report: dict) -> str:
    """The README's markdown table."""
    lines = ["| edit | method | background PSNR (dB) | background MSE ×10³ | background SSIM | edit success | "
             "reconstruction PSNR (dB) |", "|---|---|---|---|---|---|---|"]
    for edit, by in report.items():
        if edit.startswith("_"):
            continue
        for meth, s in by.items():
            lines.append(f"| {edit} | {meth} | {s['bg_psnr']:.2f} | {s['bg_mse'] * 1e3:.2f} | {s['bg_ssim']:.3f} | "
                         f"{s['success'] * 100:.0f}% | {recon(s['recon_psnr'])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
