//! The crate's error type: every failure the engine can meet becomes a `Result` with context, never a panic.
//!
//! Errors are typed by whose fault they are ([`Fault`]): the user can fix an [`Error::Input`] (a bad request,
//! flag, word, number or input file) or an [`Error::Model`] (a bad model folder, config or weight file); an
//! [`Error::Cancelled`] run was stopped on request; everything else (no adapter, a wgpu validation error, out of
//! GPU memory, device loss, a bad shape inside the engine, an adapter limit, a kernel that fails to compile, an
//! internal [`Error::Msg`]) is the engine's or the GPU's.
use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad request: a flag, a prompt word, a number, an input or output file the user named.
    #[error("{0}")]
    Input(String),
    /// A bad model folder: a missing component, a config value we do not implement, malformed weights.
    #[error("{0}")]
    Model(String),
    /// The run was cancelled through `Progress`; nothing was written.
    #[error("cancelled")]
    Cancelled,
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
    /// An engine-side failure that fits no other variant.
    #[error("{0}")]
    Msg(String),
}

/// Whose fault an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The request or the files it names: the user can fix it.
    User,
    /// The run was cancelled.
    Cancelled,
    /// The engine, the driver or the GPU.
    Engine,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn shape(op: impl fmt::Display, message: impl fmt::Display) -> Self {
        Error::Shape { op: op.to_string(), message: message.to_string() }
    }
    pub fn limit(op: impl fmt::Display, message: impl fmt::Display) -> Self {
        Error::Limit { op: op.to_string(), message: message.to_string() }
    }
    /// An engine-side failure (see [`Error::input`] and [`Error::model`] for the user's).
    pub fn msg(message: impl fmt::Display) -> Self {
        Error::Msg(message.to_string())
    }
    /// A bad request or input file.
    pub fn input(message: impl fmt::Display) -> Self {
        Error::Input(message.to_string())
    }
    /// A bad model folder, config or weight file.
    pub fn model(message: impl fmt::Display) -> Self {
        Error::Model(message.to_string())
    }

    /// Whose fault this error is.
    pub fn fault(&self) -> Fault {
        match self {
            Error::Input(_) | Error::Model(_) => Fault::User,
            Error::Cancelled => Fault::Cancelled,
            _ => Fault::Engine,
        }
    }

    /// The same error with `prefix` before its message (user-side variants keep their variant).
    pub fn context(self, prefix: impl fmt::Display) -> Self {
        match self {
            Error::Input(m) => Error::Input(format!("{prefix}{m}")),
            Error::Model(m) => Error::Model(format!("{prefix}{m}")),
            Error::Msg(m) => Error::Msg(format!("{prefix}{m}")),
            other => other,
        }
    }
}
