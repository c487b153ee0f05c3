//! `cargo bench --bench sd [-- --model DIR] [--f32] [--quick] [--e2e-steps N] [--json PATH]`: text encoder,
//! UNet call at batch 1/2/4, VAE decode, and a 2-prompt plain generation against a word swap (N steps, default
//! 50; 0 skips it) on a diffusers folder (default `target/sd15-random`, made by
//! `weights-tools/.venv/bin/python weights-tools/make_sd15_random.py`); `--quick` runs the tiny test fixture (a
//! smoke test on software Vulkan).
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let value = |f: &str| args.iter().position(|a| a == f).and_then(|i| args.get(i + 1)).cloned();
    let quick = flag("--quick") || std::env::var_os("P2P_BENCH_QUICK").is_some();
    let run = || -> p2p_wgpu::Result<()> {
        let gpu = p2p_wgpu::Gpu::new(&Default::default())?;
        let dir = match (quick, value("--model")) {
            (true, _) => std::path::PathBuf::from("tests/fixtures/sd1-tiny"),
            (false, Some(m)) => m.into(),
            (false, None) => "target/sd15-random".into(),
        };
        if !dir.is_dir() {
            return Err(p2p_wgpu::Error::msg(format!(
                "{} does not exist: make it with `weights-tools/.venv/bin/python weights-tools/make_sd15_random.py`",
                dir.display()
            )));
        }
        let dtype = if flag("--f32") || !gpu.has_f16() { p2p_wgpu::DType::F32 } else { p2p_wgpu::DType::F16 };
        let iters = if quick { 2 } else { 10 };
        let steps = value("--e2e-steps").map(|v| v.parse().map_err(|_| p2p_wgpu::Error::msg("--e2e-steps N")));
        let steps = steps.transpose()?.unwrap_or(if quick { 4 } else { 50 });
        let e2e = (steps > 0).then_some(steps);
        let report = p2p_wgpu::bench::sd::run(&gpu, &dir, dtype, iters, &[1, 2, 4], e2e)?;
        print!("{}", report.table());
        let path = value("--json").unwrap_or_else(|| "target/bench-sd.json".into());
        let text = serde_json::to_string_pretty(&report).map_err(p2p_wgpu::Error::msg)?;
        std::fs::write(&path, text).map_err(|e| p2p_wgpu::Error::msg(format!("cannot write {path}: {e}")))?;
        println!("json: {path}");
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("bench sd: error: {e}");
        std::process::exit(1);
    }
}
