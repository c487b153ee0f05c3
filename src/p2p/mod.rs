//! Prompt-to-Prompt: the edit specification (swap, refine, reweight, local blend, windows), its translation into
//! per-step attention-edit data (docs/DESIGN.md §5, the semantics of google/prompt-to-prompt), its hooks on the sampling loop
//! (`hooks`), and the host reference of local blending (`blend`). The attention layers apply it through
//! `nn::AttnHooks` and the fused kernels of `ops::attention` / `ops::blend`.
pub mod align;
pub mod blend;
pub mod hooks;
pub mod mapper;
pub mod plan;
pub mod spec;
pub mod windows;

pub use plan::{BlendPlan, EditPlan, EditSpec, Mode, Window};
