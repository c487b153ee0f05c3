//! `p2p-wgpu info [--model DIR]`: the adapter report, and for a model its parameter bytes and the activation
//! arena that the planned UNet call (CFG batch) and VAE decode need, against the adapter's limits.
use std::path::PathBuf;

use crate::error::Result;
use crate::gpu::{Gpu, GpuOptions};
use crate::models::sd::{LoadOptions, StableDiffusion};
use crate::nn::Ctx;
use crate::tensor::DType;

#[derive(clap::Args, Debug, Clone)]
pub struct InfoArgs {
    /// Also report this diffusers model's memory plan.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Images per UNet call for the plan (the CFG batch is twice this).
    #[arg(long, default_value_t = 2)]
    pub batch: usize,
    /// Weight-file variant, e.g. fp16.
    #[arg(long)]
    pub variant: Option<String>,
    /// Plan the text encoder and UNet in f16.
    #[arg(long)]
    pub f16: bool,
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

pub fn run(a: &InfoArgs, adapter: Option<String>) -> Result<()> {
    let gpu = Gpu::new(&GpuOptions { adapter })?;
    print!("{}", gpu.report());
    let Some(dir) = &a.model else { return Ok(()) };
    let dtype = if a.f16 { DType::F16 } else { DType::F32 };
    if crate::models::cascade::is_cascade(dir)? {
        return cascade_info(&gpu, dir, a, dtype);
    }
    let sd =
        StableDiffusion::load(&gpu, dir, &LoadOptions { dtype, vae_dtype: DType::F32, variant: a.variant.clone() })?;
    let (u, t, v) = (sd.unet.param_bytes, sd.text_encoder.param_bytes, sd.vae.param_bytes);
    println!("model: {}", dir.display());
    println!(
        "  parameters: unet {}, text encoder {}, vae decoder {} ({} in all, {})",
        mib(u),
        mib(t),
        mib(v),
        mib(u + t + v),
        dtype.name()
    );
    let b = a.batch.max(1);
    let s = sd.unet.config.sample_size;
    let c = sd.unet.config.in_channels;
    // Record (not run) one UNet call and one decode; their arenas are the planned activation memory.
    let text = (sd.text_encoder.config.max_position_embeddings, sd.text_encoder.config.hidden_size);
    let (unet_bytes, unet_largest) = unet_plan(&gpu, &sd.unet, text, b, s, c, dtype)?;
    let mut vx = Ctx::new(&gpu, sd.vae.dtype);
    let z = vx.alloc(&[b, s, s, c])?;
    let _ = sd.vae.forward(&mut vx, &z)?;
    let (vae_bytes, vae_largest) = vx.arena.created_bytes();
    let px = s * sd.vae.config.upscale();
    println!("  planned activations, {b} image(s) at {px}x{px} ({s}x{s} latents):");
    println!(
        "    unet call (CFG batch {}): {} in the arena, largest buffer {}",
        2 * b,
        mib(unet_bytes),
        mib(unet_largest)
    );
    println!("    vae decode: {} in the arena, largest buffer {}", mib(vae_bytes), mib(vae_largest));
    let lim = &gpu.limits;
    let largest = unet_largest.max(vae_largest);
    println!(
        "  limits: largest buffer {} of max_storage_buffer_binding_size {} ({}), max_buffer_size {}",
        mib(largest),
        mib(lim.max_storage_buffer_binding_size),
        if largest <= lim.max_storage_buffer_binding_size { "fits" } else { "ops split or refuse" },
        mib(lim.max_buffer_size)
    );
    println!("  peak estimate: {}", mib(u + t + v + unet_bytes.max(vae_bytes)));
    Ok(())
}

/// A UNet call at CFG batch `2·b` on `s×s` inputs of `c` channels, recorded (not run): (arena bytes, largest).
fn unet_plan(
    gpu: &Gpu,
    unet: &crate::models::unet::UNet,
    text: (usize, usize),
    b: usize,
    s: usize,
    c: usize,
    dtype: DType,
) -> Result<(u64, u64)> {
    let mut cx = Ctx::new(gpu, dtype);
    let x = cx.alloc(&[2 * b, s, s, c])?;
    let ts = cx.alloc_as(&[2 * b], DType::F32)?;
    let t = cx.alloc(&[2 * b, text.0, text.1])?;
    let labels = unet.config.class_embed.is_some().then(|| cx.alloc_as(&[2 * b], DType::F32)).transpose()?;
    let _ = unet.forward_full(&mut cx, &x, &ts, labels.as_ref(), &t, None)?;
    Ok(cx.arena.created_bytes())
}

fn cascade_info(gpu: &Gpu, dir: &std::path::Path, a: &InfoArgs, dtype: DType) -> Result<()> {
    let m = crate::models::cascade::Cascade::load(
        gpu,
        dir,
        &LoadOptions { dtype, vae_dtype: DType::F32, variant: a.variant.clone() },
    )?;
    let (u, s, t) = (m.unet.param_bytes, m.sr_unet.param_bytes, m.text_encoder.param_bytes);
    println!("model: {} (cascade: pixel-space base + super-resolution)", dir.display());
    println!(
        "  parameters: base unet {}, sr unet {}, text encoder {} ({} in all, {})",
        mib(u),
        mib(s),
        mib(t),
        mib(u + s + t),
        dtype.name()
    );
    let b = a.batch.max(1);
    let text = (m.text_encoder.config.max_position_embeddings, m.text_encoder.config.hidden_size);
    let bs = m.unet.config.sample_size;
    let ss = m.sr_unet.config.sample_size;
    let (base_bytes, base_largest) = unet_plan(gpu, &m.unet, text, b, bs, m.unet.config.in_channels, dtype)?;
    let (sr_bytes, sr_largest) = unet_plan(gpu, &m.sr_unet, text, b, ss, m.sr_unet.config.in_channels, dtype)?;
    println!("  planned activations, {b} image(s):");
    println!(
        "    base call at {bs}x{bs} (CFG batch {}): {} in the arena, largest buffer {}",
        2 * b,
        mib(base_bytes),
        mib(base_largest)
    );
    println!(
        "    sr call at {ss}x{ss} (CFG batch {}): {} in the arena, largest buffer {}",
        2 * b,
        mib(sr_bytes),
        mib(sr_largest)
    );
    let largest = base_largest.max(sr_largest);
    let lim = gpu.limits.max_storage_buffer_binding_size;
    println!(
        "  limits: largest buffer {} of max_storage_buffer_binding_size {} ({})",
        mib(largest),
        mib(lim),
        if largest <= lim { "fits" } else { "ops split or refuse" }
    );
    Ok(())
}
