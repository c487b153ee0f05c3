#!/usr/bin/env python3
"""The README's evaluation table of the default model, from the JSON files of eval_default.py and eval_edits.py.

    weights-tools/.venv/bin/python weights-tools/eval_default.py --n 100 --out /tmp/plain.json
    weights-tools/.venv/bin/python weights-tools/eval_edits.py --n 100 --out /tmp/edits.json
    weights-tools/.venv/bin/python weights-tools/eval_table.py /tmp/plain.json /tmp/edits.json   # markdown

Edit results may be split over several files (e.g. two eval_edits.py runs with different --edits); later files
add their edits. This is our own code (p2p-wgpu project).
"""

from __future__ import annotations

import json
import sys


def pct(v) -> str:
    return "–" if v is None else f"{100 * v:.0f}%"


def num(v, fmt: str = "{:.2f}") -> str:
    return "–" if v is None else fmt.format(v)


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    plain = json.load(open(sys.argv[1]))["summary"]
    edits: dict = {}
    for f in sys.argv[2:]:
        summary = json.load(open(f))["summary"]
        edits.update({k: v for k, v in summary.items() if not k.startswith("_")})
    run = plain
    print(f"Plain generation ({plain['scenes']} scenes, {plain['objects']} asked objects, DDIM {run['steps']} steps, "
          f"guidance {run['guidance']:g}, base stage at 32×32):\n")
    print("| measure | default model | target |")
    print("|---|---|---|")
    print(f"| object of the asked colour found | {pct(plain['colour'])} | |")
    print(f"| asked colour and shape | {pct(plain['colour_and_shape'])} (one object "
          f"{pct(plain.get('one_object_colour_and_shape'))}, two objects "
          f"{pct(plain.get('two_object_colour_and_shape'))}) | ≥ 80% |")
    print(f"| whole scene correct | {pct(plain['scene_all_correct'])} | |")
    print(f"| background as asked (chance ≈ 33%) | {pct(plain['background'])} | |")
    print(f"| extra objects per scene | {num(plain['extra_objects'])} | |")
    print()
    rows = [
        ("colour", "new_colour", "colour swap: new colour found, old gone", pct, "≥ 80%"),
        ("colour", "iou", "colour swap: mask IoU, source vs edit object", num, "≥ 0.8"),
        ("shape", "new_shape", "shape swap: new shape classified", pct, "≥ 70%"),
        ("shape", "shift_px64", "shape swap: centroid shift at 64 px, mean", num, "≤ 3 px"),
        ("shape", "shift_px64_median", "shape swap: centroid shift at 64 px, median", num, ""),
        ("refine", "outlined", "refinement (adds `outlined`): outlined classified", pct, ""),
        ("refine", "shift_px64_median", "refinement: centroid shift at 64 px, median", num, ""),
        ("reweight", "size_ratio", "reweight `big` ×3: edit/source extent ratio", num, "> 1"),
        ("reweight", "shift_px64_median", "reweight: centroid shift at 64 px, median", num, ""),
        ("blend", "new_colour", "local blend (two objects): object 1 has the new colour", pct, ""),
        ("blend", "untouched_kept", "local blend: untouched object's pixels changed by < 0.1", pct, "all"),
        ("blend", "untouched_mad", "local blend: untouched object's mean abs change", num, "0"),
    ]
    n = max((e["p2p"]["n"] for e in edits.values()), default=0)
    print(f"Edits ({n} scenes each; P2P through our PyTorch port, which the engine matches in tests/p2p_parity.rs; "
          "plain = regenerating the edited prompt from the same noise, the paper's baseline):\n")
    print("| edit | P2P | plain regeneration | target |")
    print("|---|---|---|---|")
    for edit, key, label, fmt, target in rows:
        if edit not in edits:
            continue
        p, q = edits[edit]["p2p"].get(key), edits[edit]["plain"].get(key)
        print(f"| {label} | {fmt(p)} | {fmt(q)} | {target} |")


if __name__ == "__main__":
    main()
