//! A per-dispatch profile for finding slow kernels (`P2P_WGPU_PROFILE=1`): [`Gpu::run_seq`] then submits every
//! dispatch alone and waits for it, adding its wall time to the dispatch's label and workgroup grid; the main
//! command prints the table (largest first) to stderr at the end. Much slower than a normal run on a real GPU
//! (a submission and a wait per dispatch); on a CPU adapter such as lavapipe the figures are close to the real cost.
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::error::Result;

use super::{Dispatch, Gpu};

/// Accumulated seconds and counts per "label [gx, gy, gz]".
#[derive(Default)]
pub struct Profile {
    times: Mutex<BTreeMap<String, (f64, u64)>>,
}

impl Profile {
    /// Runs every dispatch of `list` in its own submission and waits for each; returns the last index.
    pub fn run_each<'d>(
        &self,
        gpu: &Gpu,
        list: impl IntoIterator<Item = &'d Dispatch>,
    ) -> Result<wgpu::SubmissionIndex> {
        let mut last = None;
        for d in list {
            let t = Instant::now();
            let index = gpu.submit_pass(std::iter::once(d))?;
            gpu.wait_for(index.clone())?;
            let key = format!("{} {:?}", d.label, d.groups);
            let mut m = self.times.lock().unwrap_or_else(|p| p.into_inner());
            let e = m.entry(key).or_default();
            e.0 += t.elapsed().as_secs_f64();
            e.1 += 1;
            last = Some(index);
        }
        // An empty list still needs an index to wait on.
        match last {
            Some(index) => Ok(index),
            None => gpu.submit_pass(std::iter::empty()),
        }
    }

    /// The table: total seconds, share, count and key, largest first, then the total and per-label sums.
    pub fn table(&self) -> String {
        let m = self.times.lock().unwrap_or_else(|p| p.into_inner());
        let total: f64 = m.values().map(|v| v.0).sum();
        let mut rows: Vec<(&String, &(f64, u64))> = m.iter().collect();
        rows.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
        let mut s = format!("profile: {total:.2} s in {} dispatches\n", m.values().map(|v| v.1).sum::<u64>());
        let mut by_label: BTreeMap<&str, f64> = BTreeMap::new();
        for (k, v) in m.iter() {
            *by_label.entry(k.split(' ').next().unwrap_or(k)).or_default() += v.0;
        }
        let mut labels: Vec<(&str, f64)> = by_label.into_iter().collect();
        labels.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (l, t) in labels {
            s += &format!("  {t:8.3} s {:5.1}%  {l}\n", 100.0 * t / total.max(1e-12));
        }
        for (k, (t, n)) in rows.iter().take(40) {
            s += &format!("  {t:8.3} s {:5.1}% {n:6}x  {k}\n", 100.0 * t / total.max(1e-12));
        }
        s
    }
}
