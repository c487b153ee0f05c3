//! Prompt-to-Prompt: the edit specification (swap, refine, reweight, local blend, windows), its translation into
//! per-step attention-edit data (DESIGN.md §5, the semantics of google/prompt-to-prompt), and (elsewhere) its use
//! by the UNet's attention layers.
pub mod align;
pub mod mapper;
pub mod plan;
pub mod spec;
pub mod windows;

pub use plan::{BlendPlan, EditPlan, EditSpec, Mode, Window};
