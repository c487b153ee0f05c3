//! End-to-end Stable Diffusion benchmarks: the text encoder, one UNet call at batch 1/2/4 at the model's native
//! latent size, the host side of one UNet step (recording once, encode + submit per step, against the GPU time of
//! the call), the VAE decode as the pipeline runs it, and a 2-prompt plain generation against a word swap with
//! the GPU memory the edit allocated (wgpu's allocator report, sampled every step and every decoded piece). GPU
//! times come from timestamps where available; the UNet row reports TFLOP/s from the analytic count of an SD 1.5
//! call (803 GFLOP per image at 64×64 latents, scaled by the latent area for other models) only when the model is
//! SD 1.5-shaped. Weights: an SD 1.5-shaped random folder made by `weights-tools/make_sd15_random.py` (or by
//! `cargo bench --bench sd -- --fill-random`, see benches/gpu.sh), or any diffusers folder; quick mode uses the
//! tiny fixture. With the end-to-end rows come a real image's inversion and an edit from it (the same step count),
//! as ratios to the plain generation.
use std::path::Path;
use std::time::Instant;

use crate::error::Result;
use crate::gpu::Gpu;
use crate::gpu::timing::time_dispatches;
use crate::models::sd::{LoadOptions, StableDiffusion};
use crate::nn::Ctx;
use crate::p2p::{EditPlan, EditSpec};
use crate::pipelines::progress::StageProgress;
use crate::pipelines::{EditRun, Generate, Sampling, Silent, Step};
use crate::tensor::{DType, Tensor};

use super::{Report, Row, now_utc};

/// GFLOP of one SD 1.5 UNet call per image at 64×64 latents (GPU.md).
pub const SD15_UNET_GFLOP: f64 = 803.0;

/// GPU memory seen during a run: the allocator's bytes in use and reserved (wgpu's allocator report, where the
/// backend gives one), sampled after every UNet evaluation and after every decoded piece while its activations
/// are allocated, and the shared buffer pool's bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemorySeen {
    pub allocated: u64,
    pub reserved: u64,
    pub pool: u64,
}

impl MemorySeen {
    fn sample(&mut self, gpu: &Gpu) {
        if let Some(r) = gpu.device.generate_allocator_report() {
            self.allocated = self.allocated.max(r.total_allocated_bytes);
            self.reserved = self.reserved.max(r.total_reserved_bytes);
        }
        self.pool = self.pool.max(gpu.pool.created_bytes().0);
    }
}

/// Wall-clock seconds of a plain 2-prompt generation and of a word-swap edit of the same 2 prompts, `steps`
/// sampling steps each (PNDM from the model's config), decode included, in the same run; and the memory seen
/// during the edit (its stages called one by one, as `StableDiffusion::edit` calls them, so that the decode's
/// pieces can be observed).
pub fn edit_vs_plain(gpu: &Gpu, sd: &StableDiffusion, steps: usize) -> Result<(f64, f64, MemorySeen)> {
    let s = sd.unet.config.sample_size;
    let c = sd.unet.config.in_channels;
    let latents = crate::noise::gaussian(1, c * s * s);
    let source = "a red bicycle on a hill";
    let sampling = Sampling::new(steps, 7.5, latents, (s, s));
    let plain = Generate { prompts: vec![source.into(), "a red car on a hill".into()], sampling: sampling.clone() };
    let mut spec = EditSpec::new(source);
    spec.swaps = vec![("bicycle".into(), "car".into())];
    let plan = EditPlan::new(&spec, &sd.tokenizer, steps)?;
    let run = EditRun::new(sampling.clone());
    // Warm-up: one step of each, so that pipeline compilation is in neither timing.
    let one = Sampling { steps: 1, ..sampling };
    sd.generate(gpu, &Generate { sampling: one.clone(), ..plain.clone() }, &mut Silent)?;
    let warm = EditRun::new(one);
    sd.edit(gpu, &EditPlan::new(&spec, &sd.tokenizer, 1)?, &warm, &mut Silent)?;

    let t = Instant::now();
    sd.generate(gpu, &plain, &mut Silent)?;
    let t_plain = t.elapsed().as_secs_f64();
    let mut mem = MemorySeen::default();
    let t = Instant::now();
    let mut sample = |_: &Step| {
        mem.sample(gpu);
        true
    };
    let e = sd.denoiser().edit(gpu, &plan, &run, &mut StageProgress::single(&mut sample, 0))?;
    let sf = sd.vae.config.scaling_factor;
    let z: Vec<f32> = e.samples.iter().map(|&v| (v as f64 / sf) as f32).collect();
    let img = sd.vae.decode_observed(gpu, &z, plan.prompts.len(), (s, s), &mut |g| mem.sample(g))?;
    let t_edit = t.elapsed().as_secs_f64();
    if let Some(bad) = img.iter().find(|v| !v.is_finite()) {
        return Err(crate::Error::msg(format!("the edit decoded to {bad} values")));
    }
    Ok((t_plain, t_edit, mem))
}

/// Wall-clock seconds of a real image's inversion (VAE encode + `steps` DDIM inverse steps at batch 1 without
/// guidance) and of a word-swap edit from that inversion (direct method, `steps` DDIM steps at CFG batch 4, decode
/// included), in the same run; the picture is a smooth synthetic gradient at the model's native size.
pub fn invert_and_edit(gpu: &Gpu, sd: &StableDiffusion, steps: usize) -> Result<(f64, f64)> {
    let s = sd.unet.config.sample_size;
    let up = sd.vae.config.upscale();
    let px = s * up;
    let image: Vec<f32> = (0..px * px * 3)
        .map(|i| {
            let (y, x, c) = (i / (px * 3), (i / 3) % px, i % 3);
            ((x + y * (c + 1)) as f32 / (2 * px) as f32).fract() * 2.0 - 1.0
        })
        .collect();
    let source = "a red bicycle on a hill";
    let mut spec = EditSpec::new(source);
    spec.swaps = vec![("bicycle".into(), "car".into())];
    let method = crate::pipelines::Method::Direct;
    let edit = |steps: usize, given: Option<crate::pipelines::Trajectory>| -> Result<(f64, f64)> {
        let run = EditRun::new(Sampling::new(steps, 7.5, Vec::new(), (s, s)));
        let plan = EditPlan::new(&spec, &sd.tokenizer, steps)?;
        let t = Instant::now();
        let traj = match given {
            Some(t) => t,
            None => sd.invert_image(gpu, source, &image, steps, (s, s), &mut Silent, (0, steps))?,
        };
        gpu.sync()?;
        let t_inv = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let (out, _) = sd.edit_image(gpu, source, Some(&plan), &run, &image, Some(traj), method, &mut Silent)?;
        if let Some(bad) = out.images.iter().find(|v| !v.is_finite()) {
            return Err(crate::Error::msg(format!("the edit from an inversion decoded to {bad} values")));
        }
        Ok((t_inv, t.elapsed().as_secs_f64()))
    };
    // Warm-up: one step of each, so that pipeline compilation is in neither timing.
    edit(1, None)?;
    edit(steps, None)
}

/// Host-side cost of one UNet step at CFG batch `b`: (seconds to record the call once, CPU seconds to encode and
/// submit one replay (`Gpu::run`: one compute pass of every dispatch, not waiting), dispatches per call).
pub fn host_step(gpu: &Gpu, sd: &StableDiffusion, dtype: DType, b: usize, iters: u32) -> Result<(f64, f64, usize)> {
    let u = &sd.unet.config;
    let (s, c) = (u.sample_size, u.in_channels);
    let te = &sd.text_encoder.config;
    let mut cx = Ctx::new(gpu, dtype);
    let x = cx.input(&[b, s, s, c], dtype)?;
    let ts = cx.input(&[b], DType::F32)?;
    let text = cx.input(&[b, te.max_position_embeddings, te.hidden_size], dtype)?;
    x.fill(gpu, 0.1)?;
    ts.fill(gpu, 500.0)?;
    text.fill(gpu, 0.01)?;
    // Pipelines are compiled on first use: record once to warm the cache, then time a second recording.
    let _ = sd.unet.forward(&mut cx, &x, &ts, &text)?;
    cx.rec = Default::default();
    let t = Instant::now();
    let _ = sd.unet.forward(&mut cx, &x, &ts, &text)?;
    let record = t.elapsed().as_secs_f64();
    gpu.run(&cx.rec)?;
    gpu.sync()?;
    let mut best = f64::INFINITY;
    for _ in 0..iters.max(1) {
        let t = Instant::now();
        gpu.run(&cx.rec)?;
        best = best.min(t.elapsed().as_secs_f64());
        gpu.sync()?;
    }
    Ok((record, best, cx.rec.len()))
}

/// Runs the model benchmark on `dir` with `dtype` for the text encoder and UNet (VAE in f32); `e2e_steps` adds
/// the 2-prompt plain generation and word swap of `edit_vs_plain`.
pub fn run(
    gpu: &Gpu,
    dir: &Path,
    dtype: DType,
    iters: u32,
    batches: &[usize],
    e2e_steps: Option<usize>,
) -> Result<Report> {
    run_parts(gpu, dir, dtype, iters, batches, e2e_steps, true)
}

/// `run`, with the per-call rows (text encoder, UNet calls, host side, decode) only when `calls`: a long
/// end-to-end run can then go in a process of its own (benches/gpu.sh gives each its own time limit).
pub fn run_parts(
    gpu: &Gpu,
    dir: &Path,
    dtype: DType,
    iters: u32,
    batches: &[usize],
    e2e_steps: Option<usize>,
    calls: bool,
) -> Result<Report> {
    let sd = StableDiffusion::load(gpu, dir, &LoadOptions { dtype, vae_dtype: DType::F32, variant: None })?;
    let u = &sd.unet.config;
    let s = u.sample_size;
    let c = u.in_channels;
    let sd15 = u.block_out_channels == [320, 640, 1280, 1280] && u.cross_attention_dim == 768;
    let mut rows = Vec::new();
    let row = |name: String, shape: String, dt: DType, secs: f64, gflop: Option<f64>| Row {
        name,
        shape,
        dtype: dt.name().into(),
        ms: secs * 1e3,
        gflops: gflop.map(|g| g / secs),
        gbs: None,
        pct_peak: 0.0,
    };

    let mut clock = "wall-clock";
    if calls {
        // Text encoder: the CFG batch of a 2-prompt edit (4 rows).
        let tok = sd.tokenizer.encode("a photo of a cat riding a bicycle")?.ids;
        let ids = vec![tok; 4];
        let mut cx = Ctx::new(gpu, dtype);
        let _ = sd.text_encoder.forward(&mut cx, &ids)?;
        let (t, ck) = time_dispatches(gpu, &cx.rec, iters)?;
        clock = ck.name();
        rows.push(row(
            "text encoder".into(),
            format!("4x{}", sd.text_encoder.config.max_position_embeddings),
            dtype,
            t,
            None,
        ));
        drop(cx);

        let text_shape =
            |b: usize| [b, sd.text_encoder.config.max_position_embeddings, sd.text_encoder.config.hidden_size];
        for &b in batches {
            let mut cx = Ctx::new(gpu, dtype);
            let x = Tensor::from_f32(gpu, &[b, s, s, c], dtype, &vec![0.1; b * s * s * c])?;
            let ts = Tensor::from_f32(gpu, &[b], DType::F32, &vec![500.0; b])?;
            let text = Tensor::from_f32(gpu, &text_shape(b), dtype, &vec![0.01; text_shape(b).iter().product()])?;
            let _ = sd.unet.forward(&mut cx, &x, &ts, &text)?;
            let (t, _) = time_dispatches(gpu, &cx.rec, iters)?;
            let gflop = sd15.then(|| SD15_UNET_GFLOP * b as f64 * (s * s) as f64 / 4096.0);
            rows.push(row(format!("unet call, batch {b}"), format!("{b}x{s}x{s}x{c}"), dtype, t, gflop));
        }

        // Host side of one UNet step at the largest batch: recording (once per run) and encode + submit (per step),
        // against the GPU time of the same call.
        if let Some(&b) = batches.iter().max() {
            let (record, encode, n) = host_step(gpu, &sd, dtype, b, iters)?;
            rows.push(row(
                format!("unet record, batch {b} (host, once)"),
                format!("{n} dispatches"),
                dtype,
                record,
                None,
            ));
            rows.push(row(
                format!("unet encode+submit, batch {b} (host)"),
                format!("{n} disp., {:.1} µs each", encode * 1e6 / n.max(1) as f64),
                dtype,
                encode,
                None,
            ));
        }

        // The VAE decode of one image as the pipeline runs it (`VaeDecoder::decode`: whole, or tiles when the image
        // exceeds the decode budget or a buffer limit on this adapter).
        let plan = sd.vae.decode_plan(gpu, (s, s))?;
        let px = s * sd.vae.config.upscale();
        let how = match plan.tile {
            None => String::new(),
            Some((t, o)) => format!(", {} tiles of {t}² overlap {o}", plan.tiles),
        };
        if plan.tile.is_none() {
            let mut cx = Ctx::new(gpu, sd.vae.dtype);
            let z = Tensor::from_f32(gpu, &[1, s, s, c], sd.vae.dtype, &vec![0.1; s * s * c])?;
            let _ = sd.vae.forward(&mut cx, &z)?;
            let (t, _) = time_dispatches(gpu, &cx.rec, iters.min(5))?;
            rows.push(row("vae decode".into(), format!("{s}x{s} -> {px}x{px}"), sd.vae.dtype, t, None));
        } else {
            let z = vec![0.1; s * s * c];
            let t = Instant::now();
            sd.vae.decode(gpu, &z, 1, (s, s))?;
            let t = t.elapsed().as_secs_f64();
            rows.push(row(
                format!("vae decode (wall clock{how})"),
                format!("{s}x{s} -> {px}x{px}"),
                sd.vae.dtype,
                t,
                None,
            ));
        }
    }

    let mut memory = Vec::new();
    if let Some(steps) = e2e_steps {
        let (plain, edit, mem) = edit_vs_plain(gpu, &sd, steps)?;
        let shape = format!("2 prompts, {steps} steps, {s}x{s} latents");
        rows.push(row("plain generation + decode".into(), shape.clone(), dtype, plain, None));
        rows.push(row(format!("word swap edit + decode ({:.2}x plain)", edit / plain), shape, dtype, edit, None));
        if mem.reserved > 0 {
            memory.push(("edit: peak allocated (wgpu allocator report)".into(), mem.allocated));
            memory.push(("edit: peak reserved (wgpu allocator report)".into(), mem.reserved));
        }
        memory.push(("edit: shared buffer pool (weights + temporaries)".into(), mem.pool));
        let (invert, from) = invert_and_edit(gpu, &sd, steps)?;
        let shape = format!("1 picture, {steps} steps, {s}x{s} latents");
        rows.push(row(
            format!("real image: encode + DDIM inversion ({:.2}x plain)", invert / plain),
            shape,
            dtype,
            invert,
            None,
        ));
        let shape = format!("2 prompts, {steps} steps, {s}x{s} latents");
        let what = format!("real image: swap edit from its inversion + decode ({:.2}x plain)", from / plain);
        rows.push(row(what, shape, dtype, from, None));
    }

    let info = &gpu.info;
    Ok(Report {
        bench: format!("sd ({})", dir.display()),
        adapter: info.name.clone(),
        backend: format!("{:?}", info.backend),
        driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
        date_utc: now_utc(),
        quick: !sd15,
        clock: clock.into(),
        peak_gemm_gflops: 0.0,
        peak_gemm_case: String::new(),
        peak_copy_gbs: 0.0,
        rows,
        memory,
    })
}
