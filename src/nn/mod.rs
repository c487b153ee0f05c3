//! Neural-network building blocks on the kernel library, with fields named after the safetensors keys (`to_q`,
//! `to_out.0`, `norm1`) so that a missing or extra tensor is named exactly. Each block loads its weights from a
//! `weights::Loader` under a key prefix and records its forward pass into a `Ctx`.
pub mod layers;
pub mod resnet;
pub mod transformer;

use std::sync::Arc;

use crate::error::Result;
use crate::gpu::Gpu;
use crate::gpu::pool::BufferPool;
use crate::ops::Recording;
use crate::tensor::{DType, Tensor};
use crate::weights::Loader;

pub use layers::{Conv2d, GroupNorm, LayerNorm, Linear};
pub use resnet::{Downsample2D, ResnetBlock2D, ResnetCfg, Upsample2D};
pub use transformer::{
    Attention, AttnHooks, BasicTransformerBlock, StoreAt, Transformer2D, TransformerCfg, VaeAttention,
};

/// Where a forward pass is recorded: the GPU, the recording, the activation dtype, and the arena its
/// activations come from. Temporaries return to the arena when dropped and are reused by later ops of the same
/// recording (dispatches run in order, so that is a liveness-based reuse); the arena belongs to the recording's
/// owner, so a kept recording can be replayed safely.
pub struct Ctx<'a> {
    pub gpu: &'a Gpu,
    pub rec: Recording,
    pub dtype: DType,
    pub arena: Arc<BufferPool>,
}

impl<'a> Ctx<'a> {
    /// A context with a fresh arena.
    pub fn new(gpu: &'a Gpu, dtype: DType) -> Ctx<'a> {
        Ctx { gpu, rec: Recording::new(), dtype, arena: Arc::new(BufferPool::arena()) }
    }

    /// A persistent input of the recording, which the host writes between runs: from the GPU's shared pool, not
    /// the arena (arena tensors refuse host writes, since their buffers are reused within the recording), and
    /// held by every dispatch that binds it (`Dispatch::keep`).
    pub fn input(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Tensor::empty(self.gpu, shape, dtype)
    }

    /// An activation of this context's dtype from the arena.
    pub fn alloc(&self, shape: &[usize]) -> Result<Tensor> {
        Tensor::empty_in(self.gpu, &self.arena, shape, self.dtype)
    }

    /// A tensor of another dtype from the arena.
    pub fn alloc_as(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Tensor::empty_in(self.gpu, &self.arena, shape, dtype)
    }

    /// Runs what has been recorded so far and starts a new recording.
    pub fn flush(&mut self) -> Result<()> {
        let rec = std::mem::take(&mut self.rec);
        self.gpu.run(&rec)
    }
}

/// Loading context: the weights, the GPU and the dtype parameters are stored in.
pub struct Load<'a> {
    pub gpu: &'a Gpu,
    pub w: &'a mut Loader,
    pub dtype: DType,
    /// Bytes of the parameters uploaded so far.
    pub bytes: u64,
}

impl<'a> Load<'a> {
    pub fn new(gpu: &'a Gpu, w: &'a mut Loader, dtype: DType) -> Load<'a> {
        Load { gpu, w, dtype, bytes: 0 }
    }
}

impl Load<'_> {
    /// Uploads tensor `name` of `shape`. A missing or misshapen tensor is recorded by the loader (reported all
    /// together by `Loader::finish`) and stands as an empty placeholder, which is never run.
    pub fn param(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.param_with(name, shape, shape, |v| v)
    }

    /// Like `param`, re-laying the host data with `relayout` into `gpu_shape` (e.g. OIHW conv weights to OHWI).
    pub fn param_with(
        &mut self,
        name: &str,
        shape: &[usize],
        gpu_shape: &[usize],
        relayout: impl FnOnce(Vec<f32>) -> Vec<f32>,
    ) -> Result<Tensor> {
        match self.w.take(name, shape) {
            Some(h) => {
                let t = Tensor::from_f32(self.gpu, gpu_shape, self.dtype, &relayout(h.data))?;
                self.bytes += t.bytes();
                Ok(t)
            }
            None => Tensor::empty(self.gpu, &[0], self.dtype),
        }
    }
}

/// `prefix.name`, or `name` when the prefix is empty.
pub fn key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") }
}
