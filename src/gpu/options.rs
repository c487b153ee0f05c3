//! How to open the GPU and which engine switches are on: the one place the library's environment variables are
//! read ([`GpuOptions::from_env`], called by the command line, the tests and the benches; the library itself
//! only reads the options it is given).
//!
//! | variable | option |
//! |---|---|
//! | `P2P_WGPU_ADAPTER` | `adapter`: case-insensitive substring of the adapter name |
//! | `WGPU_BACKEND` | `backends` (default: Vulkan/Metal/DX12, then GL when none of them has an adapter) |
//! | `WGPU_DEBUG`, `WGPU_VALIDATION`, … | `instance_flags` (wgpu's own reading) |
//! | `P2P_WGPU_NO_COOP` | `no_coop`: no cooperative-matrix kernels |
//! | `P2P_WGPU_GEMM` | `gemm`: one GEMM tile for every GEMM (`GemmTile::name`) |
//! | `P2P_WGPU_AUTOTUNE` | `autotune`: time the GEMM tile candidates when no tuning is cached |
//! | `P2P_WGPU_TILE_CACHE`, `XDG_CACHE_HOME`, `HOME`, `LOCALAPPDATA` | `tile_cache`: the tuning cache file |
//! | `P2P_WGPU_PROFILE` | `profile`: time every dispatch alone (`gpu::profile`) |
use std::ffi::OsString;
use std::path::PathBuf;

/// Adapter choice and engine switches.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    pub adapter: Option<String>,
    /// None: Vulkan/Metal/DX12, then GL.
    pub backends: Option<wgpu::Backends>,
    /// None: wgpu's defaults.
    pub instance_flags: Option<wgpu::InstanceFlags>,
    pub no_coop: bool,
    pub gemm: Option<String>,
    pub autotune: bool,
    /// None: no tuning cache (an autotune is used for the run only).
    pub tile_cache: Option<PathBuf>,
    pub profile: bool,
    /// Caps the storage-binding size requested from the adapter (bytes; None: the adapter's own limit), so that
    /// the ops' splitting over the binding limit can be exercised on any adapter. Not read from the environment.
    pub max_binding: Option<u64>,
    /// A setting from the environment that names nothing (`WGPU_BACKEND=bogus`): [`crate::Gpu::new`] refuses to
    /// open with this message instead of guessing.
    pub invalid: Option<String>,
}

/// The backend names wgpu reads from `WGPU_BACKEND` (its own parser skips unknown ones silently).
const BACKEND_NAMES: &[&str] =
    &["vulkan", "vk", "dx12", "d3d12", "metal", "mtl", "opengl", "gles", "gl", "webgpu", "noop"];

/// `WGPU_BACKEND`'s backends, or the message naming its unknown entries.
fn backends_from(text: &str) -> Result<wgpu::Backends, String> {
    let unknown: Vec<&str> =
        text.split(',').map(str::trim).filter(|b| !BACKEND_NAMES.contains(&b.to_lowercase().as_str())).collect();
    if !unknown.is_empty() {
        return Err(format!(
            "WGPU_BACKEND={text}: unknown backend {} (use vulkan, metal, dx12 or gl, comma-separated)",
            unknown.join(", ")
        ));
    }
    Ok(wgpu::Backends::from_comma_list(text))
}

fn set(v: Option<OsString>) -> Option<OsString> {
    v.filter(|v| !v.is_empty())
}

impl GpuOptions {
    /// The options the environment asks for (the table above).
    pub fn from_env() -> GpuOptions {
        let var = |k: &str| set(std::env::var_os(k));
        let text = |k: &str| var(k).map(|v| v.to_string_lossy().into_owned());
        let (backends, invalid) = match text("WGPU_BACKEND").map(|t| backends_from(&t)) {
            None => (None, None),
            Some(Ok(b)) => (Some(b), None),
            Some(Err(m)) => (None, Some(m)),
        };
        GpuOptions {
            adapter: text("P2P_WGPU_ADAPTER"),
            backends,
            invalid,
            instance_flags: Some(wgpu::InstanceFlags::from_env_or_default()),
            no_coop: std::env::var_os("P2P_WGPU_NO_COOP").is_some(),
            gemm: text("P2P_WGPU_GEMM"),
            autotune: var("P2P_WGPU_AUTOTUNE").is_some_and(|v| v != "0"),
            tile_cache: default_cache_path(),
            profile: var("P2P_WGPU_PROFILE").is_some(),
            max_binding: None,
        }
    }
}

/// `$P2P_WGPU_TILE_CACHE` if set, else `$XDG_CACHE_HOME/p2p-wgpu/tiles.json`, else `~/.cache/p2p-wgpu/tiles.json`
/// (`~/Library/Caches` on macOS, `%LOCALAPPDATA%` on Windows); `None` when no home is known.
fn default_cache_path() -> Option<PathBuf> {
    if let Some(p) = set(std::env::var_os("P2P_WGPU_TILE_CACHE")) {
        return Some(PathBuf::from(p));
    }
    let base = if let Some(x) = set(std::env::var_os("XDG_CACHE_HOME")) {
        PathBuf::from(x)
    } else if cfg!(windows) {
        PathBuf::from(std::env::var_os("LOCALAPPDATA")?)
    } else {
        let home = PathBuf::from(std::env::var_os("HOME")?);
        if cfg!(target_os = "macos") { home.join("Library/Caches") } else { home.join(".cache") }
    };
    Some(base.join("p2p-wgpu").join("tiles.json"))
}
