//! Benchmarks that live in the library so that `cargo bench` and a quick-mode test (tests/bench_quick.rs) share them.
//! Each reports time per call, GFLOP/s or GB/s, and the fraction of the device's peak measured in the same run.
pub mod kernels;
pub mod sd;
pub mod weights;

use serde::Serialize;

/// One benchmark row.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub name: String,
    pub shape: String,
    pub dtype: String,
    pub ms: f64,
    /// GFLOP/s for compute-bound kernels.
    pub gflops: Option<f64>,
    /// GB/s (bytes read + written) for memory-bound kernels.
    pub gbs: Option<f64>,
    /// Percentage of the measured peak: best GEMM GFLOP/s for compute rows, copy bandwidth for memory rows.
    pub pct_peak: f64,
}

/// A whole benchmark run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub bench: String,
    pub adapter: String,
    pub backend: String,
    pub driver: String,
    pub date_utc: String,
    pub quick: bool,
    pub clock: String,
    pub peak_gemm_gflops: f64,
    pub peak_gemm_case: String,
    pub peak_copy_gbs: f64,
    pub rows: Vec<Row>,
    /// Memory figures (name, bytes), e.g. the allocation measured during an end-to-end edit.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub memory: Vec<(String, u64)>,
}

impl Report {
    /// A fixed-width table for the terminal and RESULTS.md.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{} on {} ({}, {}), {} UTC, {}{}\n",
            self.bench,
            self.adapter,
            self.backend,
            self.driver,
            self.date_utc,
            self.clock,
            if self.quick { ", quick mode" } else { "" },
        );
        if self.peak_gemm_gflops > 0.0 {
            s += &format!(
                "peak: GEMM {:.1} GFLOP/s ({}), copy {:.1} GB/s\n",
                self.peak_gemm_gflops, self.peak_gemm_case, self.peak_copy_gbs
            );
        }
        s += &format!(
            "| {:<34} | {:<26} | {:<5} | {:>10} | {:>12} | {:>7} |\n",
            "kernel", "shape", "dtype", "ms", "rate", "% peak"
        );
        s += &format!("|{:-<36}|{:-<28}|{:-<7}|{:->12}|{:->14}|{:->9}|\n", "", "", "", "", "", "");
        for r in &self.rows {
            let rate = match (r.gflops, r.gbs) {
                (Some(g), _) if g >= 1000.0 => format!("{:.2} TFLOP/s", g / 1000.0),
                (Some(g), _) => format!("{g:.1} GFLOP/s"),
                (_, Some(b)) => format!("{b:.1} GB/s"),
                _ => String::new(),
            };
            let pct = if r.pct_peak > 0.0 { format!("{:.1}%", r.pct_peak) } else { "-".into() };
            s += &format!(
                "| {:<34} | {:<26} | {:<5} | {:>10.3} | {:>12} | {:>7} |\n",
                r.name, r.shape, r.dtype, r.ms, rate, pct
            );
        }
        for (name, bytes) in &self.memory {
            s += &format!("memory: {name}: {:.1} MiB\n", *bytes as f64 / (1u64 << 20) as f64);
        }
        s
    }
}

/// The current UTC date and time as `YYYY-MM-DD HH:MM`.
pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", rem / 3600, (rem % 3600) / 60)
}
