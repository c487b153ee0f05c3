//! The data of one Prompt-to-Prompt cross-attention edit: [`EditData`] on the host (validated), [`CrossEdit`] its
//! GPU tensors, rewritten in place each step (the alpha row) without new allocations.
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::ops::u32_of;
use crate::tensor::{DType, Tensor};

use super::MAX_CROSS_KEYS;

/// Host-side edit data of one source prompt and its `targets` target prompts over `keys` text tokens, in the
/// layout the kernel reads. Build it with [`EditData::new`] or fill the fields directly; [`EditData::validate`]
/// (called by [`CrossEdit::new`] and [`CrossEdit::write`]) checks it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EditData {
    pub targets: usize,
    pub keys: usize,
    /// `[T, keys]`: the cross-attention window of the current step (1 inside, 0 outside, or between).
    pub alpha: Vec<f32>,
    /// `[T, keys]`: reweight factors (1 = unchanged; may be negative).
    pub eq: Vec<f32>,
    /// `[T, keys]`: weight of the target's own map (refinement's `1 − a`, 0 for a swap).
    pub r: Vec<f32>,
    /// `[T · (keys + 1)]`: CSR row pointers of each target's mapper, one row per target token n, as absolute
    /// offsets into `w_idx` / `w_weight`; target t's rows are `w_ptr[t·(keys+1) .. (t+1)·(keys+1)]`.
    pub w_ptr: Vec<u32>,
    /// Source token `w` of each mapper entry (`< keys`).
    pub w_idx: Vec<u32>,
    /// Weight `W_t[w, n]` of each mapper entry.
    pub w_weight: Vec<f32>,
}

impl EditData {
    /// Builds the CSR form from `w[t][n]`, the list of `(source token, weight)` entries of target t's token n.
    /// `alpha`, `eq`, `r` are `[T, keys]` with `T = w.len()`.
    pub fn new(
        keys: usize,
        alpha: Vec<f32>,
        eq: Vec<f32>,
        r: Vec<f32>,
        w: &[Vec<Vec<(u32, f32)>>],
    ) -> Result<EditData> {
        let targets = w.len();
        let mut w_ptr = Vec::with_capacity(targets * (keys + 1));
        let (mut w_idx, mut w_weight) = (Vec::new(), Vec::new());
        for (t, rows) in w.iter().enumerate() {
            if rows.len() != keys {
                return Err(edit_err(format!("mapper of target {t} has {} token rows, expected {keys}", rows.len())));
            }
            for row in rows {
                w_ptr.push(u32_of("cross-attention edit", "mapper entries", w_idx.len())?);
                for &(src, weight) in row {
                    w_idx.push(src);
                    w_weight.push(weight);
                }
            }
            w_ptr.push(u32_of("cross-attention edit", "mapper entries", w_idx.len())?);
        }
        let e = EditData { targets, keys, alpha, eq, r, w_ptr, w_idx, w_weight };
        e.validate()?;
        Ok(e)
    }

    /// No edit at all (α = 0, eq = 1, r = 0, empty mapper): targets get plain attention.
    pub fn identity(targets: usize, keys: usize) -> EditData {
        EditData {
            targets,
            keys,
            alpha: vec![0.0; targets * keys],
            eq: vec![1.0; targets * keys],
            r: vec![0.0; targets * keys],
            w_ptr: vec![0; targets * (keys + 1)],
            w_idx: Vec::new(),
            w_weight: Vec::new(),
        }
    }

    /// Checks every length, that each target's row pointers start at the previous target's end, never decrease and
    /// end at the entry count, that every source index is below `keys`, and that every value is finite.
    pub fn validate(&self) -> Result<()> {
        let (t, n) = (self.targets, self.keys);
        if n == 0 || n > MAX_CROSS_KEYS {
            return Err(edit_err(format!("{n} keys; the cross-attention edit takes 1 to {MAX_CROSS_KEYS}")));
        }
        for (name, len) in [("alpha", self.alpha.len()), ("eq", self.eq.len()), ("r", self.r.len())] {
            if len != t * n {
                return Err(edit_err(format!("{name} has {len} values, expected {t} targets × {n} keys")));
            }
        }
        if self.w_ptr.len() != t * (n + 1) {
            return Err(edit_err(format!(
                "w_ptr has {} entries, expected {t} targets × ({n} keys + 1)",
                self.w_ptr.len()
            )));
        }
        let nnz = self.w_idx.len();
        if self.w_weight.len() != nnz {
            return Err(edit_err(format!("w_idx has {nnz} entries but w_weight has {}", self.w_weight.len())));
        }
        let mut prev = 0u32;
        for tt in 0..t {
            let rows = &self.w_ptr[tt * (n + 1)..(tt + 1) * (n + 1)];
            if rows[0] != prev {
                return Err(edit_err(format!("w_ptr of target {tt} starts at {}, expected {prev}", rows[0])));
            }
            if let Some(i) = rows.windows(2).position(|w| w[1] < w[0]) {
                return Err(edit_err(format!("w_ptr of target {tt} decreases at token {}", i + 1)));
            }
            prev = rows[n];
        }
        if prev as usize != nnz {
            return Err(edit_err(format!("w_ptr ends at {prev} but there are {nnz} mapper entries")));
        }
        if let Some(i) = self.w_idx.iter().position(|&w| w as usize >= n) {
            return Err(edit_err(format!("mapper entry {i} names source token {} of {n}", self.w_idx[i])));
        }
        for (name, vals) in [("alpha", &self.alpha), ("eq", &self.eq), ("r", &self.r), ("w_weight", &self.w_weight)] {
            if let Some(i) = vals.iter().position(|x| !x.is_finite()) {
                return Err(edit_err(format!("{name}[{i}] is {}", vals[i])));
            }
        }
        Ok(())
    }
}

fn edit_err(message: String) -> Error {
    Error::shape("cross-attention edit data", message)
}

/// The edit data of one prompt group on the GPU (see [`EditData`] for the meaning of each tensor). Empty arrays
/// hold one unused element, since bindings cannot be empty.
pub struct CrossEdit {
    pub targets: usize,
    pub keys: usize,
    pub alpha: Tensor,
    pub eq: Tensor,
    pub r: Tensor,
    pub w_ptr: Tensor,
    pub w_idx: Tensor,
    pub w_weight: Tensor,
}

fn f32_tensor(gpu: &Gpu, v: &[f32]) -> Result<Tensor> {
    if v.is_empty() {
        Tensor::from_f32(gpu, &[1], DType::F32, &[0.0])
    } else {
        Tensor::from_f32(gpu, &[v.len()], DType::F32, v)
    }
}

fn u32_tensor(gpu: &Gpu, v: &[u32]) -> Result<Tensor> {
    if v.is_empty() { Tensor::from_u32(gpu, &[1], &[0]) } else { Tensor::from_u32(gpu, &[v.len()], v) }
}

/// Overwrites a u32 tensor of exactly `v.len()` elements in place.
fn write_u32(gpu: &Gpu, t: &Tensor, v: &[u32]) -> Result<()> {
    if t.dtype != DType::U32 || t.numel() != v.len() {
        return Err(edit_err(format!("{} u32 values written into a {:?} {} tensor", v.len(), t.shape, t.dtype.name())));
    }
    gpu.scoped("edit data upload", || gpu.queue.write_buffer(t.buffer(), t.offset(), bytemuck::cast_slice(v)))
}

impl CrossEdit {
    /// Validates `data` and uploads it.
    pub fn new(gpu: &Gpu, data: &EditData) -> Result<CrossEdit> {
        data.validate()?;
        Ok(CrossEdit {
            targets: data.targets,
            keys: data.keys,
            alpha: f32_tensor(gpu, &data.alpha)?,
            eq: f32_tensor(gpu, &data.eq)?,
            r: f32_tensor(gpu, &data.r)?,
            w_ptr: u32_tensor(gpu, &data.w_ptr)?,
            w_idx: u32_tensor(gpu, &data.w_idx)?,
            w_weight: f32_tensor(gpu, &data.w_weight)?,
        })
    }

    /// Replaces the contents with `data` (same target and key counts), in place where sizes allow. Recordings
    /// made earlier keep their bindings only while the mapper's entry count stays the same.
    pub fn write(&mut self, gpu: &Gpu, data: &EditData) -> Result<()> {
        data.validate()?;
        if data.targets != self.targets || data.keys != self.keys {
            return Err(edit_err(format!(
                "{} targets × {} keys written into edit data of {} × {}",
                data.targets, data.keys, self.targets, self.keys
            )));
        }
        for (t, v) in [(&self.alpha, &data.alpha), (&self.eq, &data.eq), (&self.r, &data.r)] {
            if !v.is_empty() {
                t.write_f32(gpu, v)?;
            }
        }
        if !data.w_ptr.is_empty() {
            write_u32(gpu, &self.w_ptr, &data.w_ptr)?;
        }
        if data.w_idx.len().max(1) == self.w_idx.numel() {
            if !data.w_idx.is_empty() {
                write_u32(gpu, &self.w_idx, &data.w_idx)?;
                self.w_weight.write_f32(gpu, &data.w_weight)?;
            }
        } else {
            self.w_idx = u32_tensor(gpu, &data.w_idx)?;
            self.w_weight = f32_tensor(gpu, &data.w_weight)?;
        }
        Ok(())
    }

    /// Rewrites α alone (`[T, keys]`), the per-step part of the edit.
    pub fn write_alpha(&self, gpu: &Gpu, alpha: &[f32]) -> Result<()> {
        if alpha.len() != self.targets * self.keys {
            return Err(edit_err(format!(
                "alpha has {} values, expected {} × {}",
                alpha.len(),
                self.targets,
                self.keys
            )));
        }
        if let Some(i) = alpha.iter().position(|x| !x.is_finite()) {
            return Err(edit_err(format!("alpha[{i}] is {}", alpha[i])));
        }
        if alpha.is_empty() { Ok(()) } else { self.alpha.write_f32(gpu, alpha) }
    }
}
