//! Helpers shared by the ops: 32-bit index checks, float-dtype checks, and the splitting of a leading dimension
//! into chunks whose bindings fit the adapter's `max_storage_buffer_binding_size`.
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::{DType, Tensor};

/// `v` as a kernel's u32, or a limit error naming `what`.
pub(crate) fn u32_of(op: &str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::limit(op, format!("{what} = {v} does not fit the kernel's 32-bit indexing")))
}

/// Errors unless `t` holds floats (f32 or f16).
pub(crate) fn float(op: &str, name: &str, t: &Tensor) -> Result<()> {
    if t.dtype == DType::U32 {
        return Err(Error::shape(op, format!("{name} is a u32 tensor; this op takes f32 or f16")));
    }
    Ok(())
}

/// Splits a leading dimension of `lead` rows into `(start, len)` chunks whose row views all fit the adapter's
/// storage binding limit and start at legal offsets; `row_bytes` lists one row's size in each split tensor.
/// One chunk when everything fits; none when `lead` is 0.
pub(crate) fn lead_chunks(gpu: &Gpu, op: &str, lead: usize, row_bytes: &[usize]) -> Result<Vec<(usize, usize)>> {
    if lead == 0 {
        return Ok(Vec::new());
    }
    let step = row_chunk(gpu, op, lead, row_bytes)?;
    Ok((0..lead).step_by(step).map(|s| (s, step.min(lead - s))).collect())
}

/// Largest row count (a multiple of the alignment that keeps views legal) whose bindings all fit; `row_bytes`
/// lists the byte size of one row of each row-split tensor.
pub(crate) fn row_chunk(gpu: &Gpu, op: &str, rows: usize, row_bytes: &[usize]) -> Result<usize> {
    let max = gpu.limits.max_storage_buffer_binding_size;
    let widest = *row_bytes.iter().max().unwrap_or(&1) as u64;
    if widest * rows as u64 <= max {
        return Ok(rows);
    }
    let align = gpu.limits.min_storage_buffer_offset_alignment as usize;
    let mut step = 1usize;
    for &rb in row_bytes {
        let need = align / gcd(align, rb.max(1));
        step = step / gcd(step, need) * need;
    }
    let fit = (max / widest) as usize / step * step;
    if fit == 0 {
        return Err(Error::limit(op, format!("one row of {widest} bytes cannot be bound within {max} bytes")));
    }
    Ok(fit)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}
