//! The `p2p-wgpu` command line. Thin: parse, call the library, report. Every failure is one line on stderr and a
//! non-zero exit code, never a panic.
use clap::{Parser, Subcommand};

use p2p_wgpu::gpu::{Gpu, GpuOptions};

#[derive(Parser)]
#[command(name = "p2p-wgpu", version, about = "Prompt-to-Prompt image editing on wgpu")]
struct Cli {
    /// Use the adapter whose name contains this text (case-insensitive). Backend: WGPU_BACKEND=vulkan|metal|dx12|gl.
    #[arg(long, global = true, env = "P2P_WGPU_ADAPTER")]
    adapter: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the GPU adapter, backend, driver, features, limits and cooperative-matrix configurations.
    Info,
}

fn run(cli: Cli) -> p2p_wgpu::Result<()> {
    match cli.command {
        Command::Info => {
            let gpu = Gpu::new(&GpuOptions { adapter: cli.adapter })?;
            print!("{}", gpu.report());
            Ok(())
        }
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("p2p-wgpu: error: {e}");
        std::process::exit(1);
    }
}
