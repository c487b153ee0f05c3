#!/usr/bin/env python3
"""How many steps each scheduler needs to come close to 50-step PNDM, on the default model's base stage.

For N world captions (seeds 0..N-1; noise = torch.randn seeded by the seed) the base images of 50-step PNDM are
the reference; every scheduler (PNDM, DDIM, DPM-Solver++ 2M, Euler; diffusers 0.42.1, built from the model's
scheduler config as `--scheduler` does) runs at several step counts from the same noise, and the table gives the
mean relative L2 distance of its images to the reference and the share of images within 0.1 of it. Guidance is
the model's `guidance_scale`. Our engine's schedulers match these to < 1e-5 per step (tests/schedulers.rs).

    weights-tools/.venv/bin/python weights-tools/step_counts.py --out weights-tools/runs/step-counts.json

This is our own code (p2p-wgpu project).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, PNDMScheduler

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_default as td  # noqa: E402
import world  # noqa: E402

CLASSES = {"pndm": PNDMScheduler, "ddim": DDIMScheduler, "dpm++": DPMSolverMultistepScheduler,
           "euler": EulerDiscreteScheduler}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "models" / "default"))
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--steps", default="10,15,20,25,30")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    m = td.load_exported(args.model)
    guidance = float(m["index"].get("guidance_scale", 7.5))
    config = dict(m["sched"].config)
    prompts = [world.sample_scene(s)["caption"] for s in range(args.n)]
    res = m["unet"].config.sample_size
    noise = torch.stack([torch.randn(3, res, res, generator=torch.Generator().manual_seed(s)) for s in range(args.n)])
    t0 = time.time()

    def sample(sched, steps: int) -> torch.Tensor:
        m["sched"] = sched
        return td.sample_base(m, prompts, steps=steps, guidance=guidance, latents=noise)

    ref = sample(PNDMScheduler.from_config(config), 50)
    table = {}
    for name, cls in CLASSES.items():
        for steps in [int(s) for s in args.steps.split(",")]:
            x = sample(cls.from_config(config), steps)
            d = ((x - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)).numpy()
            table[f"{name}@{steps}"] = dict(mean_rel_l2=round(float(d.mean()), 4),
                                            within_0_1=round(float((d < 0.1).mean()), 3))
            print(f"{name:6s} {steps:3d} steps: rel L2 to PNDM-50 {d.mean():.4f}, within 0.1: {(d < 0.1).mean():.2f}",
                  flush=True)
    run = dict(model=args.model, n=args.n, guidance=guidance, seconds=round(time.time() - t0, 1),
               reference="PNDMScheduler, 50 steps")
    print(json.dumps(run))
    if args.out:
        Path(args.out).write_text(json.dumps(dict(run=run, table=table), indent=1) + "\n")


if __name__ == "__main__":
    main()
