//! Tensor copy in 16-byte words (kernels/copy/copy.wgsl): moves data between tensors of equal byte size, and
//! measures copy bandwidth in the benchmarks.
use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::{Bind, Gpu, Kernel, grid_1d};
use crate::tensor::Tensor;

use super::Recording;

/// Mirrors `CopyParams` in kernels/copy/copy.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct CopyParams {
    pub words: u32,
    pub _pad: [u32; 3],
}

pub fn kernel() -> Kernel {
    Kernel::new("copy/copy.wgsl")
}

pub fn variants() -> Vec<Kernel> {
    vec![kernel()]
}

/// Records `dst ← src`; both must hold the same number of bytes, a multiple of 16.
pub fn copy(gpu: &Gpu, rec: &mut Recording, src: &Tensor, dst: &Tensor) -> Result<()> {
    let bytes = src.bytes();
    if bytes != dst.bytes() || !bytes.is_multiple_of(16) {
        return Err(Error::shape(
            "copy",
            format!(
                "{:?} ({} B) to {:?} ({} B): sizes must match and be multiples of 16",
                src.shape,
                bytes,
                dst.shape,
                dst.bytes()
            ),
        ));
    }
    let words = u32::try_from(bytes / 16).map_err(|_| Error::limit("copy", "more than 2^32 words"))?;
    let p = CopyParams { words, _pad: [0; 3] };
    rec.push(gpu.dispatch(
        "copy",
        &kernel(),
        &[(0, Bind::T(src)), (1, Bind::T(dst)), (2, Bind::Uniform(bytemuck::bytes_of(&p)))],
        grid_1d(words.div_ceil(256)),
    )?);
    Ok(())
}
