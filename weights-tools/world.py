#!/usr/bin/env python3
"""A small procedural world for p2p-wgpu's default model: flat shapes on plain backgrounds, with captions.

Pure numpy (no PIL needed). Every scene is deterministic from an integer seed (`sample_scene(seed)`), is drawn at any
square resolution with analytic antialiasing from signed distance functions (`render(scene, size)`), and keeps its
parameters (`scene["objects"][i]` = shape, colour, size word, centre, radius, style, ...) for evaluation.

Caption grammar (every optional part is dropped with some probability; a dropped attribute means "any value"):

    caption  := object [" and " object] [" on a " BG " background"]
    object   := "a " [SIZE " "] [STYLE " "] COLOUR " " SHAPE [" " POSITION]
    SIZE     := small | big
    STYLE    := outlined | filled        ("outlined" is always said when the shape is outlined)
    POSITION := on the left | on the right | at the top | at the bottom | in the center

Examples: "a red circle", "a big blue star on the left on a black background",
"a small outlined green heart at the top and a yellow square at the bottom on a gray background".

This is our own code (p2p-wgpu project). Run it directly to print sample captions and write a contact sheet:

    weights-tools/.venv/bin/python weights-tools/world.py --out /tmp/p2p-train/world.png
"""

from __future__ import annotations

import argparse
import math

import numpy as np

SHAPES = ["circle", "square", "triangle", "star", "heart", "ring", "cross", "diamond", "hexagon"]
COLOURS = {
    "red": (220, 30, 35),
    "green": (35, 165, 50),
    "blue": (35, 70, 225),
    "yellow": (245, 215, 25),
    "orange": (250, 135, 20),
    "purple": (135, 45, 185),
    "pink": (250, 125, 190),
    "cyan": (30, 200, 215),
}
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128)}
BG_WEIGHTS = {"white": 0.55, "black": 0.2, "gray": 0.25}
SIZES = ["small", "big"]
STYLES = ["filled", "outlined"]
# position word -> (cx, cy) in image fractions (y grows downwards); single-object scenes
POSITIONS = {
    "left": (0.28, 0.5),
    "right": (0.72, 0.5),
    "top": (0.5, 0.28),
    "bottom": (0.5, 0.72),
    "center": (0.5, 0.5),
}
POSITION_PHRASE = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
# two-object layouts (first object's position, second object's position)
PAIRS = [("left", "right"), ("right", "left"), ("top", "bottom"), ("bottom", "top")]
# radius (fraction of the image side, circumscribed) per size word; two-object scenes use the smaller ranges
RADIUS_ONE = {"small": (0.13, 0.17), "big": (0.25, 0.30)}
RADIUS_TWO = {"small": (0.13, 0.155), "big": (0.19, 0.22)}
OUTLINE_WIDTH = 0.045  # stroke width, fraction of the image side (≈1.4 px at 32, ≈6 px at 128)

# words of the grammar that the CLIP BPE splits in two (every other word is one token); checked by train_default.py
TOKEN_COST = {"cyan": 2, "hexagon": 2, "outlined": 2}
MAX_CONTENT_TOKENS = 22  # max_position_embeddings 24 minus BOS and EOS

# caption dropout probabilities (probability that the word IS said)
P_SIZE = 0.6
P_FILLED = 0.3
P_POSITION = 0.6
P_BG = 0.7
P_TWO = 0.4
P_OUTLINED = 0.25  # share of outlined objects


# ------------------------------------------------------------------------------------------------------------------
# scenes


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def sample_scene(seed: int, n_objects: int | None = None) -> dict:
    """Scene parameters and caption, deterministic from `seed`."""
    rng = np.random.default_rng([seed, 0x9E3779B1])
    n = n_objects if n_objects is not None else (2 if rng.random() < P_TWO else 1)
    bg = list(BG_WEIGHTS)[int(rng.choice(len(BG_WEIGHTS), p=list(BG_WEIGHTS.values())))]
    if n == 1:
        positions = [_pick(rng, list(POSITIONS))]
    else:
        positions = list(_pick(rng, PAIRS))
    colours = list(rng.choice(list(COLOURS), size=n, replace=False))
    objects = []
    for i in range(n):
        shape = _pick(rng, SHAPES)
        size = _pick(rng, SIZES)
        style = "outlined" if (shape != "ring" and rng.random() < P_OUTLINED) else "filled"
        lo, hi = (RADIUS_ONE if n == 1 else RADIUS_TWO)[size]
        radius = float(rng.uniform(lo, hi))
        px, py = POSITIONS[positions[i]]
        if n == 2:  # two-object layouts sit a little further out
            px = 0.5 + (px - 0.5) * 1.05
            py = 0.5 + (py - 0.5) * 1.05
        jit = 0.03
        cx = float(px + rng.uniform(-jit, jit))
        cy = float(py + rng.uniform(-jit, jit))
        obj = dict(
            shape=shape,
            colour=str(colours[i]),
            rgb=COLOURS[str(colours[i])],
            size=size,
            radius=radius,
            position=positions[i],
            cx=cx,
            cy=cy,
            style=style,
            say_size=bool(rng.random() < P_SIZE),
            say_style=bool(style == "outlined" or (shape != "ring" and rng.random() < P_FILLED)),
            say_position=bool(rng.random() < P_POSITION),
        )
        objects.append(obj)
    scene = dict(seed=int(seed), background=bg, bg_rgb=BACKGROUNDS[bg], objects=objects,
                 say_bg=bool(rng.random() < P_BG))
    # keep the caption within the text encoder's length: drop the least important words first
    drops = [(scene, "say_bg")] + [(o, "say_position") for o in objects[::-1]] + \
        [(o, "say_style") for o in objects[::-1] if o["style"] == "filled"] + [(o, "say_size") for o in objects[::-1]]
    for holder, key in drops:
        if n_tokens(caption(scene)) <= MAX_CONTENT_TOKENS:
            break
        holder[key] = False
    scene["caption"] = caption(scene)
    assert n_tokens(scene["caption"]) <= MAX_CONTENT_TOKENS, scene["caption"]
    return scene


def n_tokens(text: str) -> int:
    """CLIP BPE token count of a caption of this grammar (without BOS/EOS)."""
    return sum(TOKEN_COST.get(w, 1) for w in text.split())


def object_phrase(o: dict, size=None, style=None, position=None) -> str:
    words = ["a"]
    if size if size is not None else o["say_size"]:
        words.append(o["size"])
    if style if style is not None else o["say_style"]:
        words.append(o["style"])
    words += [o["colour"], o["shape"]]
    if position if position is not None else o["say_position"]:
        words.append(POSITION_PHRASE[o["position"]])
    return " ".join(words)


def caption(scene: dict) -> str:
    text = " and ".join(object_phrase(o) for o in scene["objects"])
    if scene["say_bg"]:
        text += f" on a {scene['background']} background"
    return text


def full_caption(scene: dict) -> str:
    """The caption with every attribute said (may exceed MAX_CONTENT_TOKENS for two-object scenes)."""
    text = " and ".join(object_phrase(o, True, True, True) for o in scene["objects"])
    return text + f" on a {scene['background']} background"


# ------------------------------------------------------------------------------------------------------------------
# signed distance functions (unit: fraction of the image side; negative inside)


def _poly_sdf(px: np.ndarray, py: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Signed distance to a simple polygon (vertices [V, 2]), vectorised over points."""
    p = np.stack([px, py], -1)[..., None, :]  # [N, 1, 2]
    a = verts[None]  # [1, V, 2]
    b = np.roll(verts, -1, 0)[None]
    e = b - a
    w = p - a
    t = np.clip((w * e).sum(-1) / (e * e).sum(-1), 0.0, 1.0)
    d = w - e * t[..., None]
    dist = np.sqrt((d * d).sum(-1).min(-1))
    # crossing-number inside test
    ay, by = a[..., 1], b[..., 1]
    pyy = p[..., 1]
    cond = (ay <= pyy) != (by <= pyy)
    xint = a[..., 0] + (pyy - ay) * (b[..., 0] - a[..., 0]) / np.where(by - ay == 0, 1e-12, by - ay)
    inside = (cond & (p[..., 0] < xint)).sum(-1) % 2 == 1
    return np.where(inside, -dist, dist)


def _regular(n: int, r: float, phase: float) -> np.ndarray:
    ang = phase + 2 * math.pi * np.arange(n) / n
    return np.stack([r * np.cos(ang), r * np.sin(ang)], -1)


def _star(r: float) -> np.ndarray:
    ang = -math.pi / 2 + math.pi * np.arange(10) / 5
    rr = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
    return np.stack([rr * np.cos(ang), rr * np.sin(ang)], -1)


def _heart(r: float) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    x, y = x / 17.0, -(y + 2.5) / 17.0  # roughly unit, centred, y down
    return np.stack([x * r * 1.05, y * r * 1.05], -1)


def _cross(r: float) -> np.ndarray:
    a, w = r * 0.92, r * 0.32
    return np.array([(-w, -a), (w, -a), (w, -w), (a, -w), (a, w), (w, w), (w, a), (-w, a), (-w, w), (-a, w),
                     (-a, -w), (-w, -w)])


def shape_sdf(shape: str, x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    """x, y relative to the centre."""
    if shape == "circle":
        return np.sqrt(x * x + y * y) - r * 0.9
    if shape == "ring":
        return np.abs(np.sqrt(x * x + y * y) - r * 0.75) - r * 0.22
    if shape == "square":
        h = r * 0.78
        qx, qy = np.abs(x) - h, np.abs(y) - h
        out = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
        return out + np.minimum(np.maximum(qx, qy), 0)
    if shape == "triangle":
        v = _regular(3, r, -math.pi / 2)
        v[:, 1] += r * 0.2
        return _poly_sdf(x, y, v)
    if shape == "diamond":
        return _poly_sdf(x, y, _regular(4, r, -math.pi / 2))
    if shape == "hexagon":
        return _poly_sdf(x, y, _regular(6, r * 0.95, 0.0))
    if shape == "star":
        return _poly_sdf(x, y, _star(r * 1.05))
    if shape == "heart":
        return _poly_sdf(x, y, _heart(r))
    if shape == "cross":
        return _poly_sdf(x, y, _cross(r))
    raise ValueError(shape)


def object_coverage(o: dict, size: int) -> np.ndarray:
    """Antialiased coverage [size, size] in [0, 1] of one object."""
    c = (np.arange(size, dtype=np.float64) + 0.5) / size
    x0, x1 = o["cx"] - o["radius"] * 1.3, o["cx"] + o["radius"] * 1.3
    y0, y1 = o["cy"] - o["radius"] * 1.3, o["cy"] + o["radius"] * 1.3
    ix = np.nonzero((c >= x0 - 2 / size) & (c <= x1 + 2 / size))[0]
    iy = np.nonzero((c >= y0 - 2 / size) & (c <= y1 + 2 / size))[0]
    cov = np.zeros((size, size), np.float32)
    if len(ix) == 0 or len(iy) == 0:
        return cov
    yy, xx = np.meshgrid(c[iy], c[ix], indexing="ij")
    d = shape_sdf(o["shape"], (xx - o["cx"]).ravel(), (yy - o["cy"]).ravel(), o["radius"])
    if o["style"] == "outlined":
        d = np.abs(d + OUTLINE_WIDTH / 2) - OUTLINE_WIDTH / 2
    a = np.clip(0.5 - d * size, 0.0, 1.0).reshape(len(iy), len(ix))
    cov[iy[0]:iy[-1] + 1, ix[0]:ix[-1] + 1] = a
    return cov


def render(scene: dict, size: int) -> np.ndarray:
    """float32 [size, size, 3] image in [0, 1]."""
    img = np.empty((size, size, 3), np.float32)
    img[:] = np.asarray(scene["bg_rgb"], np.float32) / 255.0
    for o in scene["objects"]:
        a = object_coverage(o, size)[..., None]
        img = img * (1 - a) + a * (np.asarray(o["rgb"], np.float32) / 255.0)
    return img


def render_pooled(scene: dict, size: int, factor: int = 4) -> np.ndarray:
    """Render at size*factor and box-filter down (better antialiasing for small sizes)."""
    big = render(scene, size * factor)
    return big.reshape(size, factor, size, factor, 3).mean((1, 3))


def batch(seeds, size: int) -> tuple[np.ndarray, list[str], list[dict]]:
    scenes = [sample_scene(int(s)) for s in seeds]
    imgs = np.stack([render(s, size) for s in scenes])
    return imgs, [s["caption"] for s in scenes], scenes


def all_phrases() -> list[str]:
    """The longest captions the grammar can produce (for checking token counts)."""
    out = []
    for shape in SHAPES:
        o = dict(size="small", style="outlined", colour="purple", shape=shape, position="bottom")
        o2 = dict(size="small", style="outlined", colour="yellow", shape="hexagon", position="center")
        for bg in BACKGROUNDS:
            out.append(object_phrase(o, True, True, True) + " and " + object_phrase(o2, True, True, True)
                       + f" on a {bg} background")
    return out


def save_png(path: str, img: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)).save(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/p2p-train/world.png")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--n", type=int, default=32)
    args = ap.parse_args()
    import os
    import time

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    t = time.time()
    imgs, caps, _ = batch(range(args.n), args.size)
    print(f"{args.n} scenes at {args.size}px in {time.time() - t:.3f}s")
    for i, c in enumerate(caps):
        print(i, c)
    cols = 8
    rows = (args.n + cols - 1) // cols
    sheet = np.ones((rows * (args.size + 2), cols * (args.size + 2), 3), np.float32) * 0.5
    for i, im in enumerate(imgs):
        r, c = divmod(i, cols)
        sheet[r * (args.size + 2):r * (args.size + 2) + args.size, c * (args.size + 2):c * (args.size + 2) + args.size] = im
    save_png(args.out, sheet)


if __name__ == "__main__":
    main()
