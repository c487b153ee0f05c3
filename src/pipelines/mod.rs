//! Pipelines: what turns a prompt (and an edit) into images, on the models of `models/`.
//!
//! - `sampler`: the one sampling loop (`Sampler::run`) with its step hooks, and the recording of a stage's UNet
//!   call (`StageRecording`) that owns what it binds;
//! - `stage`: a text-conditioned denoising stage (`Denoiser`) and its plain and edited runs, as hook sets;
//! - `sd`, `cascade`: the two pipelines (Stable Diffusion on latents + VAE; the pixel cascade base + SR);
//! - `inversion`: real images: DDIM inversion and the source pin of direct inversion, as hooks;
//! - `progress`: what a caller sees of a run, and how it cancels.
pub mod cascade;
pub mod inversion;
pub mod progress;
pub mod sampler;
pub mod sd;
pub mod stage;

pub use inversion::{Method, Trajectory};
pub use progress::{Preview, Progress, Silent, Step};
pub use stage::{Denoiser, EditRun, EditedSamples, Generate, Sampling, StageCond};
