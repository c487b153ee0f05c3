//! `p2p-wgpu serve`: a local web page for editing by clicking words, on one loaded model. The model is loaded once
//! at start; one engine thread runs the queued requests one at a time (`runs`); axum serves the embedded page and
//! the JSON API with server-sent progress events (`api`). Binds 127.0.0.1 unless told otherwise; accepts no file
//! paths from requests; keeps results in memory (the newest runs).
pub mod api;
pub mod runs;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;

use super::console::say;
use super::generate::model_dir;
use super::precision::PrecisionArgs;
use super::vae::VaeArgs;
use crate::error::{Error, Result};
use crate::gpu::GpuOptions;
use crate::session::Session;

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Model folder (default: the shipped models/default); loaded once, never switched at run time.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Address to listen on. Anything but a loopback address lets anyone on the network use this GPU.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:7860")]
    pub listen: SocketAddr,
    /// Require this token on every request (header X-P2P-Token or Authorization: Bearer, or the cookie that
    /// /?token=TOKEN sets).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    #[command(flatten)]
    pub precision: PrecisionArgs,
    #[command(flatten)]
    pub vae: VaeArgs,
}

/// Runs the server until the process is stopped.
pub fn run(a: &ServeArgs, gpu: GpuOptions) -> Result<()> {
    if a.token.as_deref().is_some_and(|t| t.len() < 8 || !t.bytes().all(|b| b.is_ascii_graphic() && b != b';')) {
        return Err(Error::input("--token must be at least 8 printable characters without ';'"));
    }
    let model = model_dir(a.model.as_deref())?;
    crate::weights::folder::DiffusersFolder::open(&model)?;
    let options = super::precision::session_options(model.clone(), gpu, &a.precision, &a.vae)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::msg(format!("cannot start the server's runtime: {e}")))?;
    // Bind before loading the model, so that a taken port fails at once.
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(a.listen))
        .map_err(|e| Error::input(format!("cannot listen on {}: {e}", a.listen)))?;
    let addr = listener.local_addr().map_err(|e| Error::msg(format!("listening address: {e}")))?;
    let session = Arc::new(Session::open(&options)?);
    let info = json!({
        "model": model.display().to_string(),
        "model_name": model.file_name().map(|n| n.to_string_lossy().into_owned()),
        "adapter": session.gpu.info.name,
        "steps": session.steps(&crate::session::Request::new("x")),
        "loaded_seconds": session.load_seconds,
    });
    let (shared, rx) = runs::Shared::new(session);
    let engine_shared = shared.clone();
    std::thread::Builder::new()
        .name("p2p-engine".into())
        .spawn(move || runs::engine(engine_shared, rx))
        .map_err(|e| Error::msg(format!("cannot start the engine thread: {e}")))?;
    if !addr.ip().is_loopback() {
        say(&format!(
            "p2p-wgpu: warning: listening on {addr}: anyone who can reach this address can use this GPU{}",
            if a.token.is_some() { " (with the token)" } else { "; consider --token" }
        ));
    }
    let app = api::App { shared, token: a.token.clone(), info };
    say(&format!("serving {} on http://{addr}/ (Ctrl-C stops)", model.display()));
    runtime.block_on(async move {
        axum::serve(listener, api::router(app)).await.map_err(|e| Error::msg(format!("server: {e}")))
    })
}
