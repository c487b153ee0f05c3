#!/usr/bin/env python3
"""Scene analysis and plain prompt fidelity of p2p-wgpu's default model (models/default), with diffusers sampling.

Scene analysis (`analyse(img)`, img float [H, W, 3] in [0, 1]) uses only the image:

1. background = the palette background (white/black/gray) nearest to the median of the border pixels;
2. foreground = pixels farther than FG_THRESH from the background colour;
3. each foreground pixel gets the nearest of world.COLOURS; every colour with at least MIN_PIXELS pixels (scaled with
   the image area) is one object, its mask = the pixels of that colour;
4. shape (and filled/outlined) by template matching: the world renderer draws every shape × style at a grid of
   centres and radii around the mask's bounding box, and the best soft IoU with the object's coverage wins;
5. position = centroid (image fractions), size = bounding-box half extent.

`--check-world` runs the analysis on the world's own renders (ground truth; measures the analyser itself).
Plain fidelity: for seeds 0..N-1 the world's scene caption is the prompt and the seed is the noise seed; an asked
object counts as correct when an object of its colour is found (colour) with its shape (shape).

    weights-tools/.venv/bin/python weights-tools/eval_default.py --check-world --n 200
    weights-tools/.venv/bin/python weights-tools/eval_default.py --n 100            # base model fidelity

This is our own code (p2p-wgpu project).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import world  # noqa: E402

FG_THRESH = 0.25
MIN_FRAC = 6 / 1024  # min object pixels as a fraction of the image area (6 px at 32²)
PALETTE = {k: np.asarray(v, np.float32) / 255 for k, v in world.COLOURS.items()}
BGS = {k: np.asarray(v, np.float32) / 255 for k, v in world.BACKGROUNDS.items()}


def label_pixels(img: np.ndarray):
    """(background name, palette names, per-pixel palette index, mix fraction, residual, foreground mask)."""
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    med = np.median(border, 0)
    bg = min(BGS, key=lambda k: np.sum((BGS[k] - med) ** 2))
    # every pixel is explained as a mix of the background and one palette colour (antialiased edges are such mixes):
    # alpha = projection onto the segment bg -> colour, residual = distance to that segment
    names = list(PALETTE)
    pal = np.stack([PALETTE[k] for k in names])  # [K, 3]
    seg = pal - BGS[bg]  # [K, 3]
    rel = img - BGS[bg]  # [H, W, 3]
    alpha = np.clip((rel[:, :, None, :] * seg).sum(-1) / (seg * seg).sum(-1), 0, 1)  # [H, W, K]
    resid = np.sqrt(((rel[:, :, None, :] - alpha[..., None] * seg) ** 2).sum(-1))
    lab = resid.argmin(-1)
    a = np.take_along_axis(alpha, lab[..., None], -1)[..., 0]
    r = np.take_along_axis(resid, lab[..., None], -1)[..., 0]
    fg = np.sqrt((rel ** 2).sum(-1)) > FG_THRESH
    return bg, names, lab, a, r, fg


def analyse(img: np.ndarray, shapes: bool | set = True) -> dict:
    """shapes: True = classify every object's shape; a set of colour names = only those objects'."""
    h, w, _ = img.shape
    bg, names, lab, a, r, fg = label_pixels(img)
    objects = []
    min_px = max(3, int(MIN_FRAC * h * w))
    for ci, name in enumerate(names):
        m = fg & (lab == ci) & (a > 0.5)
        n = int(m.sum())
        if n < min_px:
            continue
        ys, xs = np.nonzero(m)
        cx, cy = (xs.mean() + 0.5) / w, (ys.mean() + 0.5) / h
        x0, x1, y0, y1 = xs.min() / w, (xs.max() + 1) / w, ys.min() / h, (ys.max() + 1) / h
        o = dict(colour=name, pixels=n, cx=float(cx), cy=float(cy), bbox=(float(x0), float(y0), float(x1), float(y1)),
                 extent=float(max(x1 - x0, y1 - y0) / 2))
        if shapes is True or (shapes and name in shapes):
            cov = np.where((lab == ci) & (r < 0.3), a, 0.0).astype(np.float32)
            o.update(classify_shape(cov, (x0, y0, x1, y1)))
        objects.append(o)
    objects.sort(key=lambda o: -o["pixels"])
    return dict(background=bg, objects=objects, fg_pixels=int(fg.sum()))


def classify_shape(cov: np.ndarray, bbox) -> dict:
    size = cov.shape[0]
    x0, y0, x1, y1 = bbox
    bx, by = (x0 + x1) / 2, (y0 + y1) / 2
    half = max(x1 - x0, y1 - y0) / 2
    px = 1.0 / size
    best = (-1.0, None)
    scores = {}
    for shape in world.SHAPES:
        for style in ("filled", "outlined") if shape != "ring" else ("filled",):
            sbest = -1.0
            for rf in (0.85, 1.0, 1.15, 1.3):
                for dx in (-px, 0, px):
                    for dy in (-px, 0, px):
                        o = dict(shape=shape, style=style, cx=bx + dx, cy=by + dy, radius=half * rf / 1.0)
                        t = world.object_coverage(o, size)
                        inter = np.minimum(t, cov).sum()
                        union = np.maximum(t, cov).sum()
                        iou = float(inter / max(union, 1e-6))
                        sbest = max(sbest, iou)
            scores[(shape, style)] = sbest
            if sbest > best[0]:
                best = (sbest, (shape, style))
    return dict(shape=best[1][0], style=best[1][1], shape_iou=best[0])


def score_scene(scene: dict, found: dict) -> dict:
    objs = {o["colour"]: o for o in found["objects"]}
    res = dict(n=len(scene["objects"]), colour=0, shape=0, both=0, bg=int(found["background"] == scene["background"]),
               extra=max(0, len(found["objects"]) - len(scene["objects"])))
    for o in scene["objects"]:
        f = objs.get(o["colour"])
        if f is None:
            continue
        res["colour"] += 1
        if f.get("shape") == o["shape"]:
            res["shape"] += 1
            res["both"] += 1
    return res


def summarise(rows: list[dict]) -> dict:
    objs = sum(r["n"] for r in rows)
    out = dict(scenes=len(rows), objects=objs,
               colour=sum(r["colour"] for r in rows) / objs,
               shape=sum(r["shape"] for r in rows) / objs,
               colour_and_shape=sum(r["both"] for r in rows) / objs,
               scene_all_correct=float(np.mean([r["both"] == r["n"] for r in rows])),
               background=float(np.mean([r["bg"] for r in rows])),
               extra_objects=float(np.mean([r["extra"] for r in rows])))
    for k in ("one", "two"):
        sub = [r for r in rows if r["n"] == (1 if k == "one" else 2)]
        if sub:
            o = sum(r["n"] for r in sub)
            out[f"{k}_object_colour_and_shape"] = sum(r["both"] for r in sub) / o
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "models" / "default"))
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None, help="default: the model's num_inference_steps, else 50")
    ap.add_argument("--guidance", type=float, default=None, help="default: the model's guidance_scale, else 5")
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--check-world", action="store_true", help="analyse ground-truth renders instead of samples")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--out", default=None, help="write the per-seed results and summary (json)")
    ap.add_argument("--save-dir", default=None, help="write the generated images here")
    args = ap.parse_args()

    seeds = list(range(args.start, args.start + args.n))
    scenes = [world.sample_scene(s) for s in seeds]
    t = time.time()
    if args.check_world:
        imgs = [world.render(s, args.size) for s in scenes]
    else:
        import torch

        import train_default as td

        torch.set_num_threads(2)
        m = td.load_exported(args.model)
        args.steps = args.steps or m["index"].get("num_inference_steps", 50)
        args.guidance = args.guidance or m["index"].get("guidance_scale", 5.0)
        imgs = []
        for i in range(0, len(seeds), args.batch):
            sub = scenes[i:i + args.batch]
            res = m["unet"].config.sample_size
            lat = torch.stack([torch.randn(3, res, res, generator=torch.Generator().manual_seed(s["seed"]))
                               for s in sub])
            x = td.sample_base(m, [s["caption"] for s in sub], steps=args.steps, guidance=args.guidance, latents=lat)
            imgs += list(td.to_img(x))
            print(f"sampled {len(imgs)}/{len(seeds)} ({time.time() - t:.0f}s)", flush=True)
    t_gen = time.time() - t
    if args.save_dir:
        Path(args.save_dir).mkdir(parents=True, exist_ok=True)
        for s, im in zip(scenes, imgs):
            world.save_png(f"{args.save_dir}/{s['seed']:04d}.png", im)
    rows = []
    for s, im in zip(scenes, imgs):
        f = analyse(im, shapes={o["colour"] for o in s["objects"]})
        r = score_scene(s, f)
        r.update(seed=s["seed"], caption=s["caption"],
                 found=[(o["colour"], o.get("shape"), o.get("style"), round(o.get("shape_iou", 0), 2))
                        for o in f["objects"]], found_bg=f["background"])
        rows.append(r)
    summ = summarise(rows)
    summ.update(mode="world-renders" if args.check_world else "base-model", steps=args.steps, guidance=args.guidance,
                seconds_generate=round(t_gen, 1), seconds_total=round(time.time() - t, 1))
    print(json.dumps(summ, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(dict(summary=summ, rows=rows), indent=1))


if __name__ == "__main__":
    main()
