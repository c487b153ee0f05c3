//! Fused softmax attention on token rows, with the Prompt-to-Prompt edit functions inside the kernels.
//!
//! - [`attention`] (`flash.rs`): `out = softmax(scale · Q Kᵀ) · V` per batch row and head, computed like
//!   `torch.nn.functional.scaled_dot_product_attention` (no mask, no dropout, default scale `1/sqrt(D)`), by a
//!   flash-style kernel (kernels/attention/flash.wgsl: online softmax over key blocks staged in workgroup memory,
//!   the map is never materialised), or its cooperative-matrix form ([`flash_core`] chooses). Optional
//!   self-attention injection ([`Inject`], docs/DESIGN.md §4): chosen rows use Q and K of a source row and their
//!   own V, `out_b = softmax(scale · Q_s K_sᵀ) · V_b`.
//! - [`cross_attention_edit`] (`cross_edit.rs`): cross-attention over a few keys (text tokens, at most
//!   [`MAX_CROSS_KEYS`]) with the edit of the Prompt-to-Prompt controllers of google/prompt-to-prompt as specified
//!   in docs/DESIGN.md §4/§5 applied to the post-softmax maps of the targets (kernels/attention/cross_edit.wgsl):
//!   `E_b = eq_b ⊙ (P_s · W_b + r_b ⊙ P_b)`, `P'_b = α_b ⊙ E_b + (1 − α_b) ⊙ P_b`, `out_b = P'_b · V_b`, nothing
//!   renormalised. In store mode ([`Store`]) the kernel also adds the head-summed maps of the source and targets
//!   into a running store buffer.
//! - [`EditData`] / [`CrossEdit`] (`edit_data.rs`): the edit's tables on the host and their GPU tensors, which the
//!   host rewrites each step.
//!
//! Layout: Q and out `[B, Nq, H·D]`, K and V `[B, Nk, H·D]`, head h in channels `h·D..(h+1)·D` (what linear
//! layers produce, no transposes). Storage f32 or f16; products, softmax and sums in f32. Head dims: [`HEAD_DIMS`].
mod cross_edit;
mod edit_data;
mod flash;

pub use cross_edit::{CrossEditOpts, CrossParams, MAX_CROSS_KEYS, Store, cross_attention_edit};
pub use edit_data::{CrossEdit, EditData};
pub use flash::{
    AttentionOpts, FlashCore, FlashParams, Inject, attention, attention_with, flash_coop_bytes, flash_core,
};

use crate::error::{Error, Result};
use crate::gpu::Kernel;
use crate::tensor::{DType, Tensor};

use super::u32_of;
use cross_edit::{CROSS_SIZES, cross_kernel};
use flash::{flash_coop_kernel, flash_kernel};

/// Head dims the kernels are built for (each a define of its variants; all multiples of 4): the tiny test and
/// embedded models' small dims, SD 2.x / IF's 64, SD 1.x's 40, 80 and 160.
pub const HEAD_DIMS: [usize; 10] = [8, 12, 16, 32, 40, 64, 80, 96, 128, 160];

/// Every variant of this family, for the naga test: {f32, f16} × [`HEAD_DIMS`] for the flash kernel, and the
/// same × both key capacities × {plain, store} for the cross-attention edit kernel; the cooperative-matrix flash
/// kernel (and its emulation) for every head dim and both key blocks.
pub fn variants() -> Vec<Kernel> {
    let mut v = Vec::new();
    for d in HEAD_DIMS {
        for bkv in [32, 64] {
            v.push(flash_coop_kernel(d, bkv, false));
            v.push(flash_coop_kernel(d, bkv, true));
        }
    }
    for dt in [DType::F32, DType::F16] {
        for d in HEAD_DIMS {
            v.push(flash_kernel(dt, d));
            for (mk, bp) in CROSS_SIZES {
                for store in [false, true] {
                    v.push(cross_kernel(dt, d, mk, bp, store));
                }
            }
        }
    }
    v
}

/// Shapes of an attention call: (batch, nq, nk, channels, head dim).
pub(crate) struct Dims {
    pub batch: usize,
    pub nq: usize,
    pub nk: usize,
    pub channels: usize,
    pub d: usize,
}

/// Checks the shapes and dtypes of Q, K, V and out (`[B, Nq, H·D]`, `[B, Nk, H·D]` ×2, `[B, Nq, H·D]`, one float
/// dtype) and that `heads` divides the channels; shared by every attention op.
pub(crate) fn check_qkv_shapes(
    op: &str,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    heads: usize,
) -> Result<Dims> {
    let dt = q.dtype;
    if dt != DType::F32 && dt != DType::F16 {
        return Err(Error::shape(op, format!("q is {}, expected f32 or f16", dt.name())));
    }
    let [batch, nq, channels] = q.shape[..] else {
        return Err(Error::shape(op, format!("q must be [B, Nq, H*D], got {:?}", q.shape)));
    };
    let [kb, nk, kc] = k.shape[..] else {
        return Err(Error::shape(op, format!("k must be [B, Nk, H*D], got {:?}", k.shape)));
    };
    if kb != batch || kc != channels {
        return Err(Error::shape(op, format!("q is {:?} but k is {:?}", q.shape, k.shape)));
    }
    k.expect(op, "k", &[batch, nk, channels], dt)?;
    v.expect(op, "v", &[batch, nk, channels], dt)?;
    out.expect(op, "out", &[batch, nq, channels], dt)?;
    if heads == 0 || channels == 0 || channels % heads != 0 {
        return Err(Error::shape(op, format!("{channels} channels do not split into {heads} heads")));
    }
    if nk == 0 && batch * nq > 0 {
        return Err(Error::shape(op, "attention over zero keys"));
    }
    Ok(Dims { batch, nq, nk, channels, d: channels / heads })
}

/// `check_qkv_shapes` plus what the flash and cross-edit kernels need: a head dim they are built for and 32-bit
/// indexing.
pub(super) fn check_qkv(op: &str, q: &Tensor, k: &Tensor, v: &Tensor, out: &Tensor, heads: usize) -> Result<Dims> {
    let dims = check_qkv_shapes(op, q, k, v, out, heads)?;
    let d = dims.d;
    if !HEAD_DIMS.contains(&d) {
        return Err(Error::shape(op, format!("head dim {d} is not one of the supported {HEAD_DIMS:?}")));
    }
    u32_of(op, "q elements", q.numel())?;
    u32_of(op, "k elements", k.numel())?;
    Ok(dims)
}

#[cfg(test)]
mod tests {
    use super::flash::{flash_bk, flash_split};
    use super::*;

    /// Every portable variant stays within the portable 16 KiB of workgroup memory; the cooperative-matrix flash
    /// variants use what `flash_coop_bytes` says (the op checks it against the adapter), at most 48 KiB.
    #[test]
    fn workgroup_memory_fits_16_kib() {
        for d in HEAD_DIMS {
            for bkv in [32, 64] {
                for emu in [false, true] {
                    let k = flash_coop_kernel(d, bkv, emu);
                    let got = workgroup_bytes(&k);
                    assert_eq!(got, flash_coop_bytes(d, bkv, emu), "{k}");
                }
            }
            assert!(flash_coop_bytes(d, 32, false) <= 48 * 1024, "head dim {d}");
        }
        // The emulation runs within lavapipe's 32 KiB up to head dim 64.
        assert!(flash_coop_bytes(64, 32, true) <= 32 * 1024);
        for k in variants().into_iter().filter(|k| !k.path.contains("coop") && !k.path.contains("emu")) {
            let bytes = workgroup_bytes(&k);
            assert!(bytes <= 16384, "{k} uses {bytes} bytes of workgroup memory");
            assert!(bytes >= 4096, "{k} uses only {bytes} bytes: a define went missing?");
        }
    }

    fn workgroup_bytes(k: &Kernel) -> u32 {
        let src = k.source().unwrap();
        let module = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{k}: {}", e.emit_to_string(&src)));
        module
            .global_variables
            .iter()
            .filter(|(_, g)| g.space == naga::AddressSpace::WorkGroup)
            .map(|(_, g)| module.types[g.ty].inner.size(module.to_ctx()))
            .sum()
    }

    #[test]
    fn flash_blocks() {
        assert_eq!((flash_bk(40), flash_bk(64), flash_bk(80), flash_bk(160), flash_bk(8)), (51, 32, 25, 10, 64));
        assert!(flash_split(160) && !flash_split(128));
    }
}
