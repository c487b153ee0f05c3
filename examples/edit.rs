//! Open a session on the shipped default model, swap a word, save the images and the grid.
//!
//! `cargo run --release --example edit` (writes `edit-example/`).
use p2p_wgpu::gpu::GpuOptions;
use p2p_wgpu::pipelines::Step;
use p2p_wgpu::session::{Files, Request, Session, SessionOptions};

fn main() -> p2p_wgpu::Result<()> {
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default");
    let session = Session::open(&SessionOptions { gpu: GpuOptions::from_env(), ..SessionOptions::new(model) })?;

    let mut request = Request::new("a red circle on a white background");
    request.swap = vec!["red=blue".into()];
    request.seed = Some(1);

    let mut progress = |s: &Step| {
        eprint!("\r{} step {}/{}", s.stage, s.step, s.total);
        true // false would cancel the run
    };
    let out = session.run(&request, &mut progress)?;
    eprintln!();

    let dir = std::path::Path::new("edit-example");
    std::fs::create_dir_all(dir).map_err(|e| p2p_wgpu::Error::input(format!("{}: {e}", dir.display())))?;
    for path in out.write(dir, Files::default())? {
        println!("wrote {}", path.display());
    }
    Ok(())
}
