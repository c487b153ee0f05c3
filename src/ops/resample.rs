//! (being written)
use crate::gpu::Kernel;

/// Every variant of this family, for the naga test.
pub fn variants() -> Vec<Kernel> {
    Vec::new()
}
