//! End-to-end Stable Diffusion benchmarks: the text encoder, one UNet call at batch 1/2/4 at the model's native
//! latent size, and the VAE decode, each timed on the GPU (timestamps where available); the UNet row reports
//! TFLOP/s from the analytic count of an SD 1.5 call (803 GFLOP per image at 64×64 latents, scaled by the latent
//! area for other models) only when the model is SD 1.5-shaped. Weights: an SD 1.5-shaped random folder made by
//! `weights-tools/make_sd15_random.py` (no download), or any diffusers folder; quick mode uses the tiny fixture.
use std::path::Path;
use std::time::Instant;

use crate::error::Result;
use crate::gpu::Gpu;
use crate::gpu::timing::time_dispatches;
use crate::models::sd::{Generate, LoadOptions, StableDiffusion};
use crate::models::sd_edit::EditRun;
use crate::nn::Ctx;
use crate::p2p::{EditPlan, EditSpec};
use crate::tensor::{DType, Tensor};

use super::{Report, Row, now_utc};

/// GFLOP of one SD 1.5 UNet call per image at 64×64 latents (GPU.md).
pub const SD15_UNET_GFLOP: f64 = 803.0;

/// Wall-clock seconds of a plain 2-prompt generation and of a word-swap edit of the same 2 prompts, `steps`
/// sampling steps each (PNDM from the model's config), decode included, in the same run.
pub fn edit_vs_plain(gpu: &Gpu, sd: &StableDiffusion, steps: usize) -> Result<(f64, f64)> {
    let s = sd.unet.config.sample_size;
    let c = sd.unet.config.in_channels;
    let latents = crate::app::noise::gaussian(1, c * s * s);
    let source = "a red bicycle on a hill";
    let plain = Generate {
        prompts: vec![source.into(), "a red car on a hill".into()],
        negative: String::new(),
        steps,
        guidance: 7.5,
        scheduler: None,
        latents: latents.clone(),
        latent_hw: (s, s),
    };
    let t = Instant::now();
    sd.generate(gpu, &plain, &mut |_, _| {})?;
    let t_plain = t.elapsed().as_secs_f64();
    let mut spec = EditSpec::new(source);
    spec.swaps = vec![("bicycle".into(), "car".into())];
    let plan = EditPlan::new(&spec, &sd.tokenizer, steps)?;
    let run = EditRun {
        negative: String::new(),
        steps,
        guidance: 7.5,
        scheduler: None,
        latents,
        latent_hw: (s, s),
        self_max_res: 16,
        blend_res: None,
        attention_res: None,
    };
    let t = Instant::now();
    sd.edit(gpu, &plan, &run, &mut |_, _| {})?;
    Ok((t_plain, t.elapsed().as_secs_f64()))
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

    // Text encoder: the CFG batch of a 2-prompt edit (4 rows).
    let tok = sd.tokenizer.encode("a photo of a cat riding a bicycle")?.ids;
    let ids = vec![tok; 4];
    let mut cx = Ctx::new(gpu, dtype);
    let _ = sd.text_encoder.forward(&mut cx, &ids)?;
    let (t, ck) = time_dispatches(gpu, &cx.rec, iters)?;
    let clock = ck.name();
    rows.push(row(
        "text encoder".into(),
        format!("4x{}", sd.text_encoder.config.max_position_embeddings),
        dtype,
        t,
        None,
    ));
    drop(cx);

    let text_shape = |b: usize| [b, sd.text_encoder.config.max_position_embeddings, sd.text_encoder.config.hidden_size];
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

    let mut cx = Ctx::new(gpu, sd.vae.dtype);
    let z = Tensor::from_f32(gpu, &[1, s, s, c], sd.vae.dtype, &vec![0.1; s * s * c])?;
    let _ = sd.vae.forward(&mut cx, &z)?;
    let (t, _) = time_dispatches(gpu, &cx.rec, iters.min(5))?;
    let px = s * sd.vae.config.upscale();
    rows.push(row("vae decode".into(), format!("{s}x{s} -> {px}x{px}"), sd.vae.dtype, t, None));

    if let Some(steps) = e2e_steps {
        let (plain, edit) = edit_vs_plain(gpu, &sd, steps)?;
        let shape = format!("2 prompts, {steps} steps, {s}x{s} latents");
        rows.push(row("plain generation + decode".into(), shape.clone(), dtype, plain, None));
        rows.push(row(format!("word swap edit + decode ({:.2}x plain)", edit / plain), shape, dtype, edit, None));
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
    })
}
