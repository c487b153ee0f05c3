#!/usr/bin/env python3
"""Prompt-to-Prompt edit evaluation of p2p-wgpu's default model (models/default), by programmatic scene analysis.

For every seed a world scene gives the source prompt (its caption) and the initial noise (torch.randn seeded by the
seed); each edit runs twice from the same noise:

- **P2P**: the edit through `ptp_reference.py` (our PyTorch port of docs/DESIGN.md §5, which the engine matches number for
  number in tests/p2p_parity.rs), default windows (cross 0.8, self 0.4, the CLI's defaults) and the model's scheduler;
- **plain**: plain regeneration of the edited prompt from the same noise (the paper's Figure 2 baseline).

Edits and what is measured (the source object = the object of the asked colour in the source image):

| edit | scenes | measured |
|---|---|---|
| colour swap `red=blue` | one object | mask IoU source vs edit object; new colour found and old colour gone |
| shape swap `circle=square` | one object | centroid shift (px at 64 px); new shape classified |
| refinement (adds `outlined`) | one filled object | centroid shift; mask IoU of the filled hull; `outlined` classified |
| reweight of the size word (`big` × 3 in "a big ...") | one object | edit/source extent ratio; centroid shift |
| local blend: colour swap of object 1 with `--blend <shape 1>` | two objects | untouched object 2: share of its pixels changed by < 0.1, mean abs change; new colour of object 1 |

Preservation numbers (IoU, centroid shift, untouched pixels) are computed only where the source shows its object.

    weights-tools/.venv/bin/python weights-tools/eval_edits.py --n 100 --out weights-tools/runs/eval-edits.json

This is our own code (p2p-wgpu project).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_default as ev  # noqa: E402
import ptp_reference as ptp  # noqa: E402
import train_default as td  # noqa: E402
import world  # noqa: E402

EDITS = ["colour", "shape", "refine", "reweight", "blend"]
SWAP_SHAPES = [s for s in world.SHAPES if s != "hexagon"]  # hexagon ~ circle at 32 px, even for the analyser
REWEIGHT = 3.0


class _Identity:
    """The pixel-space base has no VAE: decoding is the identity (scaling factor 1)."""

    class config:  # noqa: N801
        scaling_factor = 1.0

    class _Out:
        def __init__(self, x):
            self.sample = x

    def decode(self, x):
        return self._Out(x)


class _Pipe:
    def __init__(self, m):
        self.tokenizer, self.text_encoder, self.unet, self.vae = m["tok"], m["te"], m["unet"], _Identity()


def mask_of(img: np.ndarray, colour: str) -> np.ndarray:
    """Pixels the analyser assigns to `colour` (boolean [H, W])."""
    _, names, lab, a, _, fg = ev.label_pixels(img)
    return fg & (lab == names.index(colour)) & (a > 0.5)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    u = (a | b).sum()
    return float((a & b).sum() / u) if u else 0.0


def centroid(m: np.ndarray):
    ys, xs = np.nonzero(m)
    return (xs.mean(), ys.mean()) if len(xs) else None


def find(img: np.ndarray, colour: str, shapes=True):
    f = ev.analyse(img, shapes={colour} if shapes else False)
    return next((o for o in f["objects"] if o["colour"] == colour), None), f


def pick(rng: np.random.Generator, items, exclude):
    opts = [i for i in items if i != exclude]
    return opts[int(rng.integers(len(opts)))]


def scenes_for(edit: str, n: int, start: int):
    """(seed, scene, source prompt, EditSpec, info) for the first n applicable seeds from `start`."""
    out, seed = [], start
    while len(out) < n:
        rng = np.random.default_rng([seed, 0xED17])
        s = world.sample_scene(seed, n_objects=2 if edit == "blend" else 1)
        o = s["objects"][0]
        words = s["caption"].split(" ")
        spec, info = None, {}
        if edit == "colour":
            new = pick(rng, list(world.COLOURS), o["colour"])
            spec, info = ptp.EditSpec(prompt=s["caption"], swaps=[(o["colour"], new)]), dict(old=o["colour"], new=new)
        elif edit == "shape" and o["shape"] != "hexagon":
            new = pick(rng, SWAP_SHAPES, o["shape"])
            spec, info = ptp.EditSpec(prompt=s["caption"], swaps=[(o["shape"], new)]), dict(old=o["shape"], new=new)
        elif edit == "refine" and o["style"] == "filled" and "filled" not in words and o["shape"] != "ring":
            i = words.index(o["colour"])
            tgt = " ".join(words[:i] + ["outlined"] + words[i:])
            if world.n_tokens(tgt) <= world.MAX_CONTENT_TOKENS:
                spec = ptp.EditSpec(prompt=s["caption"], targets=[tgt])
        elif edit == "reweight":
            if "big" not in words:
                if "small" in words:
                    words[words.index("small")] = "big"
                else:
                    i = words.index(o["colour"]) - (1 if words[words.index(o["colour"]) - 1] in world.STYLES else 0)
                    words = words[:i] + ["big"] + words[i:]
            src = " ".join(words)
            if world.n_tokens(src) <= world.MAX_CONTENT_TOKENS:
                spec = ptp.EditSpec(prompt=src, reweights=[("big", REWEIGHT)])
        elif edit == "blend":
            o2 = s["objects"][1]
            if o["shape"] != o2["shape"]:
                new = pick(rng, [c for c in world.COLOURS if c != o2["colour"]], o["colour"])
                spec = ptp.EditSpec(prompt=s["caption"], swaps=[(o["colour"], new)], blend_words=[o["shape"]])
                info = dict(old=o["colour"], new=new, other=o2["colour"])
        if spec is not None:
            out.append((seed, s, spec, info))
        seed += 1
    return out


def run_pair(pipe, sched, spec: ptp.EditSpec, seed: int, steps: int, guidance: float, max_len: int, blend_res: int):
    """(source image, P2P edit image, plain regeneration image), [H, W, 3] in [0, 1]."""
    sc = copy.deepcopy(sched)
    sc.set_timesteps(steps)
    plan = ptp.build_plan(spec, pipe.tokenizer, len(sc.timesteps), max_len)  # windows over UNet evaluations
    res = pipe.unet.config.sample_size
    lat = torch.randn(1, 3, res, res, generator=torch.Generator().manual_seed(seed))
    g = ptp.generate(pipe, plan.prompts, lat, copy.deepcopy(sched), steps, guidance, plan=plan,
                     blend_res=blend_res if plan.blend_positions else None)
    p = ptp.generate(pipe, plan.prompts[1:2], lat, copy.deepcopy(sched), steps, guidance, plan=None, edit=False)
    img = g["image"].permute(0, 2, 3, 1).numpy()
    return img[0], img[1], p["image"].permute(0, 2, 3, 1).numpy()[0]


def measure(edit: str, scene: dict, info: dict, src: np.ndarray, out: np.ndarray) -> dict:
    o = scene["objects"][0]
    px64 = 64 / src.shape[0]
    r = {}
    if edit in ("colour", "blend"):
        ms, me = mask_of(src, info["old"]), mask_of(out, info["new"])
        r["new_colour"] = bool(me.sum() >= 3 and mask_of(out, info["old"]).sum() < 3)
        if ms.sum() >= 3 and edit == "colour":
            r["iou"] = iou(ms, me)
        if edit == "blend":
            m2 = mask_of(src, info["other"])
            if m2.sum() >= 3:
                d = np.abs(out - src).max(-1)[m2]
                r["untouched_kept"] = float((d < 0.1).mean())
                r["untouched_mad"] = float(np.abs(out - src)[m2].mean())
    elif edit == "shape":
        cs, ce = centroid(mask_of(src, o["colour"])), centroid(mask_of(out, o["colour"]))
        f, _ = find(out, o["colour"])
        r["new_shape"] = bool(f is not None and f.get("shape") == info["new"])
        if cs is not None and ce is not None:
            r["shift_px64"] = float(np.hypot(cs[0] - ce[0], cs[1] - ce[1]) * px64)
    elif edit == "refine":
        ms, me = mask_of(src, o["colour"]), mask_of(out, o["colour"])
        f, _ = find(out, o["colour"])
        r["outlined"] = bool(f is not None and f.get("style") == "outlined")
        cs, ce = centroid(ms), centroid(me)
        if cs is not None and ce is not None:
            r["shift_px64"] = float(np.hypot(cs[0] - ce[0], cs[1] - ce[1]) * px64)
    elif edit == "reweight":
        fs, _ = find(src, o["colour"], shapes=False)
        fe, _ = find(out, o["colour"], shapes=False)
        if fs is not None and fe is not None:
            r["size_ratio"] = fe["extent"] / max(fs["extent"], 1e-6)
            r["shift_px64"] = float(np.hypot(fs["cx"] - fe["cx"], fs["cy"] - fe["cy"]) * 64)
    return r


def edit_label(edit: str, spec: ptp.EditSpec, info: dict) -> str:
    what = {"colour": "swap {old}={new}", "shape": "swap {old}={new}", "blend": "swap {old}={new}, blend"}
    if edit in what:
        return f"{spec.prompt}  |  " + what[edit].format(**info)
    if edit == "refine":
        return f"{spec.prompt}  ->  {spec.targets[0]}"
    return f"{spec.prompt}  |  reweight big x{REWEIGHT:g}"


def write_grid(path: str, strips, scale: int = 4) -> None:
    """Rows of source | P2P edit | plain regeneration, nearest-upscaled, each with its edit written above."""
    from PIL import Image, ImageDraw

    side = strips[0][1].shape[0] * scale
    pad, head = 6, 26
    per_line = (3 * side + 2 * pad) // 6
    cols = ["source", "P2P edit", "plain regeneration"]
    W = 3 * side + 4 * pad
    H = head + len(strips) * (side + head + pad) + pad
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    d = ImageDraw.Draw(canvas)
    for c, name in enumerate(cols):
        d.text((pad + c * (side + pad), 6), name, fill=(0, 0, 0))
    y = head
    for label, *imgs in strips:
        d.text((pad, y + 1), label[:per_line], fill=(60, 60, 60))
        d.text((pad, y + 12), label[per_line:2 * per_line], fill=(60, 60, 60))
        y += head
        for c, im in enumerate(imgs):
            tile = Image.fromarray((np.clip(im, 0, 1) * 255).round().astype(np.uint8)).resize((side, side),
                                                                                              Image.NEAREST)
            canvas.paste(tile, (pad + c * (side + pad), y))
        y += side + pad
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def summarise(rows: list[dict]) -> dict:
    keys = sorted({k for r in rows for k in r})
    out = {"n": len(rows)}
    for k in keys:
        v = [float(r[k]) for r in rows if k in r]
        out[k] = round(float(np.mean(v)), 4) if v else None
        out[k + "_n"] = len(v)
        if k == "shift_px64" and v:
            out["shift_px64_median"] = round(float(np.median(v)), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "models" / "default"))
    ap.add_argument("--n", type=int, default=100, help="scenes per edit")
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--edits", default=",".join(EDITS))
    ap.add_argument("--steps", type=int, default=None, help="default: the model's num_inference_steps, else 50")
    ap.add_argument("--guidance", type=float, default=None, help="default: the model's guidance_scale, else 5")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write per-scene rows and the summary (json)")
    ap.add_argument("--save-dir", default=None, help="write source | P2P | plain strips here")
    ap.add_argument("--grid", default=None, help="write a captioned PNG grid of the first --grid-rows scenes per edit")
    ap.add_argument("--grid-rows", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    m = td.load_exported(args.model)
    args.steps = args.steps or m["index"].get("num_inference_steps", 50)
    args.guidance = args.guidance or m["index"].get("guidance_scale", 5.0)
    pipe = _Pipe(m)
    max_len = m["tok"].model_max_length
    ptp.MAX_LEN = max_len  # encode() pads to the module's MAX_LEN
    blend_res = ptp.default_blend_res(pipe.unet, pipe.unet.config.sample_size)
    t0 = time.time()
    report, rows_all, strips = {}, {}, []
    for edit in args.edits.split(","):
        rows = []
        for k, (seed, scene, spec, info) in enumerate(scenes_for(edit, args.n, args.start)):
            src, p2p, plain = run_pair(pipe, m["sched"], spec, seed, args.steps, args.guidance, max_len, blend_res)
            row = dict(seed=seed, prompt=spec.prompt, info=info,
                       p2p=measure(edit, scene, info, src, p2p), plain=measure(edit, scene, info, src, plain))
            rows.append(row)
            if k < args.grid_rows:
                strips.append((edit_label(edit, spec, info), src, p2p, plain))
            if args.save_dir:
                Path(args.save_dir).mkdir(parents=True, exist_ok=True)
                world.save_png(f"{args.save_dir}/{edit}-{seed:04d}.png", np.concatenate([src, p2p, plain], 1))
            if (k + 1) % 10 == 0:
                print(f"{edit}: {k + 1}/{args.n} ({time.time() - t0:.0f}s)", flush=True)
        report[edit] = dict(p2p=summarise([r["p2p"] for r in rows]), plain=summarise([r["plain"] for r in rows]))
        rows_all[edit] = rows
        print(edit, json.dumps(report[edit]), flush=True)
    report["_run"] = dict(model=args.model, n=args.n, start=args.start, steps=args.steps, guidance=args.guidance,
                          scheduler=type(m["sched"]).__name__, reweight=REWEIGHT, blend_res=blend_res,
                          seconds=round(time.time() - t0, 1))
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(dict(summary=report, rows=rows_all), indent=1))
    if args.grid:
        write_grid(args.grid, strips)


if __name__ == "__main__":
    main()
