//! p2p-wgpu: Prompt-to-Prompt image editing as a GPU compute engine on raw wgpu.
//!
//! This crate holds the GPU runtime (`gpu`), GPU tensors (`tensor`) and the WGSL kernel library with its Rust-side
//! ops (`ops`). Models, schedulers and the edit machinery build on these (see docs/DESIGN.md and docs/ARCHITECTURE.md).
pub mod app;
pub mod batch;
pub mod bench;
pub mod convert;
pub mod error;
pub mod gpu;
pub mod input_image;
pub mod models;
pub mod nn;
pub mod noise;
pub mod ops;
pub mod output;
pub mod p2p;
pub mod pictures;
pub mod pipelines;
pub mod schedulers;
pub mod session;
pub mod tensor;
pub mod text;
pub mod weights;

pub use error::{Error, Result};
pub use gpu::Gpu;
pub use tensor::{DType, Tensor};
