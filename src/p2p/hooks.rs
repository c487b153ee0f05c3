//! Prompt-to-Prompt as hooks on the one sampling loop (`pipelines::sampler`, whose `StepHooks` forwards to
//! [`EditHooks::before_step`] / [`EditHooks::after_step`]): before each UNet evaluation the
//! edit's alpha row of that evaluation is written to the GPU and the recorded variant is chosen (with
//! self-attention injection inside the self window, without outside it); after the scheduler step, local blending
//! (from the blend's start step) runs in the same submission. At the end the attention store and the last blend
//! masks are read back.
use crate::error::Result;
use crate::gpu::{Dispatch, Gpu};
use crate::ops::attention::CrossEdit;
use crate::ops::blend::LocalBlend;
use crate::tensor::Tensor;

use super::EditPlan;

/// The GPU side of one edit: the cross-attention edit tables, the attention stores `(side, layers, buffer)`
/// (the blend's side first) and local blending.
pub struct EditHooks<'p> {
    plan: &'p EditPlan,
    pub edit: CrossEdit,
    pub stores: Vec<(usize, usize, Tensor)>,
    blend: Option<(LocalBlend, usize)>,
    blended: bool,
}

impl<'p> EditHooks<'p> {
    /// Uploads the edit tables of `plan` (evaluation 0's alpha row).
    pub fn new(gpu: &Gpu, plan: &'p EditPlan, stores: Vec<(usize, usize, Tensor)>) -> Result<Self> {
        let edit = CrossEdit::new(gpu, &plan.edit_data(0)?)?;
        Ok(EditHooks { plan, edit, stores, blend: None, blended: false })
    }

    /// Prepares local blending of the sample `x` from the first store (when the plan blends).
    pub fn blend_on(&mut self, gpu: &Gpu, x: &Tensor) -> Result<()> {
        if let (Some(bp), Some((_, _, store))) = (&self.plan.blend, self.stores.first()) {
            self.blend = Some((LocalBlend::new(gpu, store, &bp.positions, bp.threshold, x)?, bp.start_step));
        }
        Ok(())
    }

    /// After the loop: the summed maps at `attention_res` with the evaluation count `evals`, and the last blend
    /// masks (when blending ran).
    #[allow(clippy::type_complexity)]
    pub fn read_back(
        &self,
        gpu: &Gpu,
        attention_res: Option<usize>,
        evals: usize,
    ) -> Result<(Option<(Vec<f32>, usize, usize)>, Option<Vec<Vec<f32>>>)> {
        let masks = match &self.blend {
            Some((lb, _)) if self.blended => Some(lb.read_masks(gpu)?),
            _ => None,
        };
        let attention = match attention_res.and_then(|a| self.stores.iter().find(|(res, _, _)| *res == a)) {
            Some((res, _, buf)) => Some((buf.to_f32(gpu)?, *res, evals)),
            None => None,
        };
        Ok((attention, masks))
    }
}

impl EditHooks<'_> {
    /// Before evaluation `i`: writes its alpha row; returns the recorded variant to replay (0: with self-attention
    /// injection, inside the self window; 1: without).
    pub fn before_step(&mut self, gpu: &Gpu, i: usize) -> Result<usize> {
        self.edit.write_alpha(gpu, &self.plan.edit_data(i)?.alpha)?;
        let (s, e) = self.plan.self_steps;
        let inject = s <= i && i < e;
        self.blended |= self.blend.as_ref().is_some_and(|(_, start)| i >= *start);
        Ok(if inject { 0 } else { 1 })
    }

    /// The local-blend dispatches that run after the scheduler step of evaluation `i` (from the blend's start).
    pub fn after_step(&self, i: usize) -> Vec<&Dispatch> {
        match &self.blend {
            Some((lb, start)) if i >= *start => lb.dispatches().collect(),
            _ => Vec::new(),
        }
    }
}
