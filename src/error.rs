//! The crate's error type: every failure the engine can meet (no adapter, a wgpu validation error, out of GPU
//! memory, device loss, a bad shape, a limit that an op would exceed, a kernel that fails to compile) becomes a
//! `Result` with context, never a panic.
use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no usable GPU adapter: {0}")]
    NoAdapter(String),
    #[error("GPU error in {context}: {message}")]
    Gpu { context: String, message: String },
    #[error("GPU out of memory in {0}")]
    OutOfMemory(String),
    #[error("GPU device lost: {0}")]
    DeviceLost(String),
    #[error("kernel {path}: {message}")]
    Kernel { path: String, message: String },
    #[error("shape error in {op}: {message}")]
    Shape { op: String, message: String },
    #[error("{op} exceeds an adapter limit: {message}")]
    Limit { op: String, message: String },
    #[error("{0}")]
    Msg(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn shape(op: impl fmt::Display, message: impl fmt::Display) -> Self {
        Error::Shape { op: op.to_string(), message: message.to_string() }
    }
    pub fn limit(op: impl fmt::Display, message: impl fmt::Display) -> Self {
        Error::Limit { op: op.to_string(), message: message.to_string() }
    }
    pub fn msg(message: impl fmt::Display) -> Self {
        Error::Msg(message.to_string())
    }
}
