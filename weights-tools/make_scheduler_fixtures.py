#!/usr/bin/env python3
"""Scheduler parity fixtures for p2p-wgpu: diffusers' own timestep lists, noise scales and whole sampling runs.

For every scheduler the engine implements (PNDM with skip_prk_steps, DDIM with eta 0, DPM-Solver++ 2M, Euler) and
a few noise-schedule configs, it records what diffusers 0.42.1 computes:

- `timesteps` after `set_timesteps(S)` for S in TIMESTEP_STEPS, `init_noise_sigma`, and the factor
  `scale_model_input` applies before every UNet evaluation (`input_scales`);
- for S in RUN_STEPS, a run of every step on a small random sample with random model outputs (fed in order, as a
  pipeline would, but independent of the sample): the initial sample and every intermediate sample.

The schedulers are made as a pipeline swaps them, `Class.from_config(config)`: keys missing from the config take
the new class's defaults (diffusers drops the source class's defaulted values, `_use_default_values`).

Written under tests/fixtures/schedulers/ (deterministic: same bytes on every run):

- `<config>/scheduler_config.json`: the config every class is made from (read back by the Rust tests);
- `<config>.json`: per class name (`pndm`, `ddim`, `dpm`, `euler`) and step count, `timesteps`,
  `init_noise_sigma`, `input_scales`;
- `<config>.safetensors`: `<class>.<S>.x` [evaluations + 1, N] (row 0 the initial sample, row i+1 the sample after
  evaluation i) and `<class>.<S>.out` [evaluations, N] the model outputs, f32;
- `saved/<class>/scheduler_config.json`: the sd15 config as each class saves it (`save_config`), with every key the
  class has (for the strict config reader, `lambda_min_clipped: -Infinity` included).

This is our own code (p2p-wgpu project). Regenerate (a few seconds on CPU) from the repository root:

    weights-tools/.venv/bin/python weights-tools/make_scheduler_fixtures.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

import diffusers
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, PNDMScheduler

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "fixtures" / "schedulers"

CLASSES = {
    "pndm": PNDMScheduler,
    "ddim": DDIMScheduler,
    "dpm": DPMSolverMultistepScheduler,
    "euler": EulerDiscreteScheduler,
}
TIMESTEP_STEPS = [1, 2, 4, 10, 25, 50]
RUN_STEPS = [1, 2, 4, 10, 25]
SHAPE = (1, 4, 4, 2)  # a small NCHW sample; every step is elementwise

SD15 = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.42.1",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
}

CONFIGS = {
    # SD 1.5's scheduler (PNDM, epsilon).
    "sd15": (SD15, list(CLASSES)),
    # SD 2.1's scheduler (DDIM, v-prediction).
    "sd2v": (
        {**SD15, "_class_name": "DDIMScheduler", "prediction_type": "v_prediction"},
        list(CLASSES),
    ),
    # A linear-beta DDPM schedule, no offset, DDIM clipping the predicted x0 (a narrow range, so random outputs clip)
    # and ᾱ = 1 after the last step.
    "linear": (
        {
            "_class_name": "DDIMScheduler",
            "beta_end": 0.02,
            "beta_schedule": "linear",
            "beta_start": 0.0001,
            "clip_sample": True,
            "clip_sample_range": 1.5,
            "num_train_timesteps": 1000,
            "prediction_type": "epsilon",
            "set_alpha_to_one": True,
            "skip_prk_steps": True,
            "steps_offset": 0,
            "timestep_spacing": "leading",
        },
        list(CLASSES),
    ),
    # SD 1.5's original file has no timestep_spacing: DPM-Solver++ then takes its own default, "linspace".
    "sd15_nospacing": ({k: v for k, v in SD15.items() if k != "timestep_spacing"}, ["dpm"]),
    # A DPM-Solver++ config with few keys: the linear default schedule, lambda_min_clipped cutting the noisiest
    # timesteps (λ(999) ≈ -5.06 on this schedule) for DPM-Solver++; DDIM takes its own defaults (clip_sample,
    # set_alpha_to_one), Euler its own. (PNDM's default skip_prk_steps = false is not implemented.)
    "dpm_minimal": (
        {
            "_class_name": "DPMSolverMultistepScheduler",
            "beta_schedule": "linear",
            "lambda_min_clipped": -4.0,
            "steps_offset": 1,
            "timestep_spacing": "leading",
        },
        ["ddim", "dpm", "euler"],
    ),
}


def seed_of(*parts: str) -> int:
    h = 1469598103934665603
    for b in "/".join(parts).encode():
        h = ((h ^ b) * 1099511628211) % (1 << 63)
    return h


def make(cls, cfg: dict):
    return cls.from_config(cfg)


def run(cls, cfg: dict, steps: int, seed: int):
    s = make(cls, cfg)
    s.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    evals = len(s.timesteps)
    x = torch.randn(SHAPE, generator=g, dtype=torch.float32) * float(s.init_noise_sigma)
    outs = torch.randn((evals, *SHAPE), generator=g, dtype=torch.float32)
    xs = [x.clone()]
    scales = []
    for i, t in enumerate(s.timesteps):
        scaled = s.scale_model_input(torch.ones(SHAPE), t)
        scales.append(float(scaled.flatten()[0]))
        x = s.step(outs[i], t, x).prev_sample
        xs.append(x.clone())
    return (
        torch.stack(xs).reshape(evals + 1, -1).contiguous(),
        outs.reshape(evals, -1).contiguous(),
        scales,
    )


def main() -> None:
    torch.use_deterministic_algorithms(True)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    for name, (cfg, kinds) in CONFIGS.items():
        (OUT / name).mkdir()
        (OUT / name / "scheduler_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        meta: dict = {
            "diffusers": diffusers.__version__,
            "torch": torch.__version__,
            "shape": list(SHAPE),
            "classes": {},
        }
        tensors = {}
        for kind in kinds:
            cls = CLASSES[kind]
            entry: dict = {"class": cls.__name__, "steps": {}}
            for steps in sorted(set(TIMESTEP_STEPS) | set(RUN_STEPS)):
                s = make(cls, cfg)
                s.set_timesteps(steps)
                rec = {
                    "timesteps": [int(round(float(t))) for t in s.timesteps],
                    "init_noise_sigma": float(s.init_noise_sigma),
                }
                if steps in RUN_STEPS:
                    xs, outs, scales = run(cls, cfg, steps, seed_of(name, kind, str(steps)))
                    tensors[f"{kind}.{steps}.x"] = xs
                    tensors[f"{kind}.{steps}.out"] = outs
                    rec["input_scales"] = scales
                entry["steps"][str(steps)] = rec
            meta["classes"][kind] = entry
        (OUT / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
        save_file(tensors, str(OUT / f"{name}.safetensors"), metadata={"config": name})
    for kind, cls in CLASSES.items():
        d = OUT / "saved" / kind
        d.mkdir(parents=True)
        make(cls, SD15).save_config(str(d))
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT.relative_to(REPO)} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
