#!/usr/bin/env python3
"""The README's picture: edits of the default model made by the engine itself (target/release/p2p-wgpu).

For every edit below, one run of the command line with the edit (its `source.png` and `edit.png`: the source's
plain generation and the Prompt-to-Prompt edit) and one plain run of the edited prompt with the same seed (the
paper's baseline: regenerating from the same noise). The rows are composed with eval_edits.write_grid into
docs/default-model-edits.png: source | P2P edit | plain regeneration, each at the model's full 128×128.

    cargo build --release && weights-tools/.venv/bin/python weights-tools/readme_pictures.py

This is our own code (p2p-wgpu project). Pinned environment: weights-tools/requirements.txt.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_edits  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# (prompt, edit flags, edited prompt for the plain regeneration, label)
EDITS = [
    ("a red circle on a white background", ["--swap", "circle=square"], "a red square on a white background",
     "swap circle=square"),
    ("a blue star on a black background", ["--swap", "blue=yellow"], "a yellow star on a black background",
     "swap blue=yellow"),
    ("a green heart on a white background", ["--target", "a green outlined heart on a white background"],
     "a green outlined heart on a white background", "refine: + outlined"),
    ("a small purple triangle on a gray background", ["--swap", "small=big"],
     "a big purple triangle on a gray background", "swap small=big"),
    ("a red circle on the left and a blue square on the right on a white background",
     ["--swap", "red=green", "--blend", "circle"],
     "a green circle on the left and a blue square on the right on a white background",
     "swap red=green, blend circle"),
]


def run(binary: Path, args: list[str]) -> None:
    r = subprocess.run([str(binary), *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"p2p-wgpu {' '.join(args)}: {r.stderr.strip()}")


def load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=str(REPO / "target" / "release" / "p2p-wgpu"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "docs" / "default-model-edits.png"))
    ap.add_argument("extra", nargs="*", help="more engine flags after --, e.g. -- --model DIR --steps 2")
    a = ap.parse_args()
    binary = Path(a.binary)
    extra = ["--seed", str(a.seed), *a.extra]
    strips = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (prompt, flags, edited, label) in enumerate(EDITS):
            e, p = Path(tmp) / f"edit{i}", Path(tmp) / f"plain{i}"
            run(binary, ["--prompt", prompt, *flags, *extra, "--out", str(e)])
            run(binary, ["--prompt", edited, *extra, "--out", str(p)])
            plain = sorted(p.glob("*.png"))[0]
            strips.append((f"{prompt} | {label}", load(e / "source.png"), load(e / "edit.png"), load(plain)))
            print(f"{label}: done", flush=True)
    eval_edits.write_grid(a.out, strips, scale=1)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
