//! The GPU runtime: context and error handling, the embedded kernel files and their preprocessor, the pipeline
//! cache, the buffer pool, dispatch recording and GPU timestamps.
pub mod context;
pub mod dispatch;
pub mod options;
pub mod pipeline;
pub mod pool;
pub mod preprocess;
pub mod profile;
mod report;
pub mod timing;

mod kernel_files {
    include!(concat!(env!("OUT_DIR"), "/kernel_files.rs"));
}

pub use context::{CoopConfig, Gpu, GpuOptions};
pub use dispatch::{Bind, Dispatch, Storage, grid_1d};
pub use pipeline::Kernel;
pub use preprocess::Defines;
