//! `p2p-wgpu info [--model DIR]`: the adapter report, and for a model its parameter bytes and the planned GPU
//! memory of a whole run (weights, text encoder, the UNet call with its persistent tensors, an edit's second
//! recording and attention stores, the VAE decode as `VaeDecoder::decode_plan` splits it) against the adapter's
//! limits. The plan loads the weights and records every phase without running it: the arenas are exactly the
//! buffers a run would create on this adapter (op choices, splits and tiling follow the adapter's limits).
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::console::out;
use super::generate::whole;
use super::precision::PrecisionArgs;
use super::vae::VaeArgs;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuOptions};
use crate::models::sd::{LoadOptions, StableDiffusion};
use crate::nn::Ctx;
use crate::output::{OutputFiles, write_atomic};
use crate::p2p::{EditPlan, EditSpec};
use crate::pipelines::{Denoiser, EditRun, Generate, Sampling, StageCond};
use crate::session::weight_variant;
use crate::tensor::DType;
use crate::weights::folder::{SR_UNET, TEXT_ENCODER, UNET, VAE};

#[derive(clap::Args, Debug, Clone)]
pub struct InfoArgs {
    /// Also report this diffusers model's memory plan.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Prompts per run for the plan (an edit: the source and N-1 targets); the CFG batch is twice this.
    #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = whole::<usize>("between 1 and 64"))]
    pub batch: usize,
    /// Image height and width in pixels for the plan (default: the model's native size).
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<usize>("a positive number of pixels"))]
    pub height: Option<usize>,
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<usize>("a positive number of pixels"))]
    pub width: Option<usize>,
    /// The precision planned (as the main command's flags).
    #[command(flatten)]
    pub precision: PrecisionArgs,
    /// The VAE tiling planned (as the main command's flags).
    #[command(flatten)]
    pub vae: VaeArgs,
    /// Also write the plan as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

/// The planned GPU memory of a Stable Diffusion run, in bytes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MemoryPlan {
    pub adapter: String,
    pub model: String,
    pub prompts: usize,
    pub image_hw: (usize, usize),
    pub latent_hw: (usize, usize),
    pub dtype: String,
    pub vae_dtype: String,
    /// Parameter bytes: UNet, text encoder, VAE decoder.
    pub params_unet: u64,
    pub params_text_encoder: u64,
    pub params_vae: u64,
    /// Bytes of the GPU's shared pool after loading: the parameters in their buffer size classes.
    pub weights_allocated: u64,
    /// The text encoder's arena (CFG batch); it lives on with the text embeddings during the UNet phase.
    pub text_encoder_arena: u64,
    /// The UNet call's arena (activations, sample, timesteps and output: the persistent tensors), plain run.
    pub unet_arena: u64,
    pub unet_largest: u64,
    /// Both recordings of an edit (with and without self-attention injection) in their shared arena.
    pub edit_unet_arena: u64,
    /// Shared-pool buffers an edit adds: the edit tables and the attention stores at the blend side.
    pub edit_shared: u64,
    pub store_bytes: u64,
    /// Decode: tile side and overlap in latents (None: whole images), pieces per image, one piece's arena.
    pub vae_tile: Option<(usize, usize)>,
    pub vae_pieces: usize,
    pub vae_arena: u64,
    pub vae_largest: u64,
    /// The decode's analytic estimate for a whole image (`VaeDecoder::estimate`), tiled or not.
    pub vae_whole_estimate: u64,
    pub vae_whole_largest: u64,
    /// Other shared-pool temporaries (token ids, the VAE attention's scores): the pool keeps them.
    pub shared_temporaries: u64,
    /// Peaks: shared pool (weights + temporaries) + the largest phase (text encoder + UNet, or the decode).
    pub peak_generate: u64,
    pub peak_edit: u64,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
}

/// The most prompts `--batch` plans for (a source and 63 targets).
pub const MAX_BATCH: usize = 64;

pub fn run(a: &InfoArgs, opts: GpuOptions) -> Result<()> {
    if a.batch == 0 || a.batch > MAX_BATCH {
        return Err(Error::input(format!("--batch must be between 1 and {MAX_BATCH}, got {}", a.batch)));
    }
    if let (Some(path), Some(dir)) = (&a.json, &a.model) {
        let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        OutputFiles::new(folder, &[], &[("--json", path)]).check(&[dir.as_path()], &[])?;
    }
    let gpu = Gpu::new(&opts)?;
    out(&format!("{}{}", gpu.report(), crate::ops::report::kernel_report(&gpu)))?;
    let Some(dir) = &a.model else { return Ok(()) };
    let (dtype, vae_dtype) = a.precision.precision().resolve(&gpu)?;
    if crate::models::cascade::is_cascade(dir)? {
        return out(&cascade_info(&gpu, dir, a, dtype)?);
    }
    let plan = plan_sd(&gpu, dir, a, dtype, vae_dtype)?;
    out(&plan.text())?;
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&plan).map_err(Error::msg)?;
        write_atomic(path, text.as_bytes())?;
    }
    Ok(())
}

impl MemoryPlan {
    /// The report's lines.
    pub fn text(&self) -> String {
        let mut s = format!("model: {}\n", self.model);
        let (u, t, v) = (self.params_unet, self.params_text_encoder, self.params_vae);
        s += &format!(
            "  parameters: unet {}, text encoder {} ({}), vae decoder {} ({}); {} in all, {} allocated\n",
            mib(u),
            mib(t),
            self.dtype,
            mib(v),
            self.vae_dtype,
            mib(u + t + v),
            mib(self.weights_allocated)
        );
        let ((ph, pw), (lh, lw), b) = (self.image_hw, self.latent_hw, self.prompts);
        s += &format!("  planned memory, {b} prompt(s) at {ph}x{pw} px ({lh}x{lw} latents):\n");
        s += &format!("    text encoder (CFG batch {}): {} arena\n", 2 * b, mib(self.text_encoder_arena));
        s += &format!(
            "    unet call (CFG batch {}): {} arena with its persistent tensors, largest buffer {}\n",
            2 * b,
            mib(self.unet_arena),
            mib(self.unet_largest)
        );
        s += &format!(
            "    edit: both unet recordings {} arena; edit tables and stores {} (stores {})\n",
            mib(self.edit_unet_arena),
            mib(self.edit_shared),
            mib(self.store_bytes)
        );
        let how = match self.vae_tile {
            None => "whole".to_string(),
            Some((t, o)) => format!("in {} tiles of {t}x{t} latents, overlap {o}", self.vae_pieces),
        };
        s += &format!(
            "    vae decode, one image at a time, {how}: {} arena per piece, largest buffer {} (a whole image: {} \
             estimated, largest {})\n",
            mib(self.vae_arena),
            mib(self.vae_largest),
            mib(self.vae_whole_estimate),
            mib(self.vae_whole_largest)
        );
        s += &format!("    shared-pool temporaries: {}\n", mib(self.shared_temporaries));
        let largest = self.unet_largest.max(self.vae_largest);
        s += &format!(
            "  limits: largest buffer {} of max_storage_buffer_binding_size {} ({}), max_buffer_size {}\n",
            mib(largest),
            mib(self.max_storage_buffer_binding_size),
            if largest <= self.max_storage_buffer_binding_size { "fits" } else { "ops split or refuse" },
            mib(self.max_buffer_size)
        );
        s += &format!(
            "  planned peak: generation {} ({}), edit {} ({})\n",
            mib(self.peak_generate),
            gib(self.peak_generate),
            mib(self.peak_edit),
            gib(self.peak_edit)
        );
        s
    }
}

/// Loads `dir` and records (does not run) every phase of a `a.batch`-prompt generation and edit.
pub fn plan_sd(gpu: &Gpu, dir: &std::path::Path, a: &InfoArgs, dtype: DType, vae_dtype: DType) -> Result<MemoryPlan> {
    let variant = weight_variant(dir, a.precision.variant.as_deref(), dtype, &[TEXT_ENCODER, UNET, VAE]);
    let mut sd = StableDiffusion::load(gpu, dir, &LoadOptions { dtype, vae_dtype, variant })?;
    sd.vae.tiling = a.vae.decode_options()?.with_tile_px(a.vae.vae_tile_size, sd.vae.config.upscale())?;
    let weights_allocated = gpu.pool.created_bytes().0;
    let b = a.batch.max(1);
    let up = sd.vae.config.upscale();
    let native = sd.unet.config.sample_size * up;
    let (ph, pw) = (a.height.unwrap_or(native), a.width.unwrap_or(native));
    let grid = up << (sd.unet.config.block_out_channels.len() - 1);
    if ph == 0 || pw == 0 || ph % grid != 0 || pw % grid != 0 {
        return Err(Error::input(format!("--height and --width must be positive multiples of {grid}, got {ph}x{pw}")));
    }
    let (h, w) = (ph / up, pw / up);

    // Text encoder, CFG batch: its arena lives on with the embeddings it returns.
    let source = "a photo of a cat riding a bicycle";
    let mut spec = EditSpec::new(source);
    spec.targets = (1..b).map(|_| "a photo of a dog riding a bicycle".to_string()).collect();
    let prompts: Vec<String> = std::iter::once(source.to_string()).chain(spec.targets.iter().cloned()).collect();
    let ids = sd.denoiser().encode_ids(&prompts, "")?;
    let mut tx = Ctx::new(gpu, dtype);
    let text = sd.text_encoder.forward(&mut tx, &ids)?;
    let text_encoder_arena = tx.arena.created_bytes().0;

    // The plain UNet call and the edit's two recordings, recorded (not run) by the code the sampler replays.
    let steps = 50;
    let latent_hw = (h, w);
    let g = Generate { prompts: prompts.clone(), sampling: Sampling::new(steps, 7.5, Vec::new(), latent_hw) };
    let (unet_arena, unet_largest) = sd.denoiser().record_plain(gpu, &g, None)?.arena_bytes();
    let (edit_unet_arena, edit_shared, store_bytes) = if b >= 2 {
        let before = gpu.pool.created_bytes().0;
        let plan = EditPlan::new(&spec, &sd.tokenizer, steps)?;
        let square = h == w && sd.unet.default_map_side(h, w).is_some();
        let r = EditRun { attention_res: square.then_some(None), ..EditRun::new(g.sampling.clone()) };
        let (rec, hooks, _) = sd.denoiser().record_edit(gpu, &plan, &r)?;
        let store_bytes = hooks.stores.iter().map(|(_, _, t)| t.bytes()).sum();
        (rec.arena_bytes().0, gpu.pool.created_bytes().0 - before, store_bytes)
    } else {
        (unet_arena, 0, 0)
    };
    drop((text, tx));

    // The decode, one piece as `VaeDecoder::decode` runs it.
    let vplan = sd.vae.decode_plan(gpu, (h, w))?;
    let (vae_arena, vae_largest, _) = sd.vae.record_piece(gpu, &vplan)?;
    let whole = sd.vae.estimate(gpu, h, w);

    let pool = gpu.pool.created_bytes().0;
    let shared_temporaries = pool - weights_allocated - edit_shared;
    let unet_phase = text_encoder_arena + unet_arena;
    let edit_phase = text_encoder_arena + edit_unet_arena;
    let peak_generate = weights_allocated + shared_temporaries + unet_phase.max(vae_arena);
    let peak_edit = weights_allocated + shared_temporaries + edit_shared + edit_phase.max(vae_arena);
    Ok(MemoryPlan {
        adapter: gpu.info.name.clone(),
        model: dir.display().to_string(),
        prompts: b,
        image_hw: (ph, pw),
        latent_hw: (h, w),
        dtype: dtype.name().into(),
        vae_dtype: vae_dtype.name().into(),
        params_unet: sd.unet.param_bytes,
        params_text_encoder: sd.text_encoder.param_bytes,
        params_vae: sd.vae.param_bytes,
        weights_allocated,
        text_encoder_arena,
        unet_arena,
        unet_largest,
        edit_unet_arena,
        edit_shared,
        store_bytes,
        vae_tile: vplan.tile,
        vae_pieces: vplan.tiles,
        vae_arena,
        vae_largest,
        vae_whole_estimate: whole.total(),
        vae_whole_largest: whole.largest,
        shared_temporaries,
        peak_generate,
        peak_edit,
        max_storage_buffer_binding_size: gpu.limits.max_storage_buffer_binding_size,
        max_buffer_size: gpu.limits.max_buffer_size,
    })
}

/// The plain call of `stage` for `b` prompts on `s×s` samples (a conditioned stage: with a zero image of `cc`
/// channels), recorded (not run) as the sampler replays it: (arena bytes, largest).
fn unet_plan(gpu: &Gpu, stage: Denoiser, b: usize, s: usize, cc: usize) -> Result<(u64, u64)> {
    let g =
        Generate { prompts: vec!["a red circle".to_string(); b], sampling: Sampling::new(1, 7.5, Vec::new(), (s, s)) };
    let label = stage.unet.config.class_embed.is_some().then_some(0.0);
    let image = vec![0.0; b * s * s * cc];
    let cond = (cc > 0).then_some(StageCond { image: &image, channels: cc, class_label: label });
    Ok(stage.record_plain(gpu, &g, cond.as_ref())?.arena_bytes())
}

fn cascade_info(gpu: &Gpu, dir: &std::path::Path, a: &InfoArgs, dtype: DType) -> Result<String> {
    use std::fmt::Write as _;
    let mut o = String::new();
    let variant = weight_variant(dir, a.precision.variant.as_deref(), dtype, &[TEXT_ENCODER, UNET, SR_UNET]);
    let m = crate::models::cascade::Cascade::load(gpu, dir, &LoadOptions { dtype, vae_dtype: DType::F32, variant })?;
    let (u, s, t) = (m.unet.param_bytes, m.sr_unet.param_bytes, m.text_encoder.param_bytes);
    let _ = writeln!(o, "model: {} (cascade: pixel-space base + super-resolution)", dir.display());
    let _ = writeln!(
        o,
        "  parameters: base unet {}, sr unet {}, text encoder {} ({} in all, {})",
        mib(u),
        mib(s),
        mib(t),
        mib(u + s + t),
        dtype.name()
    );
    let b = a.batch.max(1);
    let bs = m.unet.config.sample_size;
    let ss = m.sr_unet.config.sample_size;
    let (base_bytes, base_largest) = unet_plan(gpu, m.base(), b, bs, 0)?;
    let cc = m.sr_unet.config.in_channels - m.sr_unet.config.out_channels;
    let (sr_bytes, sr_largest) = unet_plan(gpu, m.sr(), b, ss, cc)?;
    let _ = writeln!(o, "  planned activations, {b} image(s):");
    let _ = writeln!(
        o,
        "    base call at {bs}x{bs} (CFG batch {}): {} in the arena, largest buffer {}",
        2 * b,
        mib(base_bytes),
        mib(base_largest)
    );
    let _ = writeln!(
        o,
        "    sr call at {ss}x{ss} (CFG batch {}): {} in the arena, largest buffer {}",
        2 * b,
        mib(sr_bytes),
        mib(sr_largest)
    );
    let largest = base_largest.max(sr_largest);
    let lim = gpu.limits.max_storage_buffer_binding_size;
    let _ = writeln!(
        o,
        "  limits: largest buffer {} of max_storage_buffer_binding_size {} ({})",
        mib(largest),
        mib(lim),
        if largest <= lim { "fits" } else { "ops split or refuse" }
    );
    Ok(o)
}
