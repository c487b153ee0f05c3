//! `cargo bench --bench kernels [-- --quick] [--json PATH]`: the kernel microbenchmarks of `p2p_wgpu::bench`.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick") || std::env::var_os("P2P_BENCH_QUICK").is_some();
    let json = args.iter().position(|a| a == "--json").and_then(|i| args.get(i + 1)).cloned();
    let run = || -> p2p_wgpu::Result<()> {
        let gpu = p2p_wgpu::Gpu::new(&p2p_wgpu::gpu::GpuOptions::from_env())?;
        let report = p2p_wgpu::bench::kernels::run(&gpu, quick)?;
        print!("{}", report.table());
        let path = json.unwrap_or_else(|| "target/bench-kernels.json".into());
        let text = serde_json::to_string_pretty(&report).map_err(p2p_wgpu::Error::msg)?;
        std::fs::write(&path, text).map_err(|e| p2p_wgpu::Error::msg(format!("cannot write {path}: {e}")))?;
        println!("json: {path}");
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("bench kernels: error: {e}");
        std::process::exit(1);
    }
}
