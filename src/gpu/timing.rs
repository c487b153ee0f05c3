//! Timing of dispatch lists for benchmarks: GPU timestamp queries around one compute pass when the adapter has
//! `TIMESTAMP_QUERY`, otherwise wall clock around a submission followed by a wait.
use std::time::Instant;

use crate::error::{Error, Result};

use super::{Dispatch, Gpu};

/// How a time was measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    Timestamps,
    WallClock,
}

impl Clock {
    pub fn name(self) -> &'static str {
        match self {
            Clock::Timestamps => "gpu-timestamps",
            Clock::WallClock => "wall-clock",
        }
    }
}

/// Seconds per run of `list`, averaged over `iters` runs encoded back to back in one pass (after one warm-up run).
pub fn time_dispatches(gpu: &Gpu, list: &[Dispatch], iters: u32) -> Result<(f64, Clock)> {
    let iters = iters.max(1);
    encode(gpu, list, 1, None)?;
    gpu.sync()?;
    if gpu.has(wgpu::Features::TIMESTAMP_QUERY) {
        let qs = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("bench"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bench resolve"),
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let read = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bench read"),
            size: 16,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        encode(gpu, list, iters, Some((&qs, &resolve, &read)))?;
        let slice = read.slice(..);
        slice.map_async(wgpu::MapMode::Read, |_| {});
        gpu.sync()?;
        let ticks: [u64; 2] = {
            let view = slice
                .get_mapped_range()
                .map_err(|e| Error::Gpu { context: "timestamps".into(), message: e.to_string() })?;
            let v: &[u64] = bytemuck::cast_slice(&view);
            [v[0], v[1]]
        };
        read.unmap();
        let ns = ticks[1].saturating_sub(ticks[0]) as f64 * gpu.queue.get_timestamp_period() as f64;
        if ns > 0.0 {
            return Ok((ns * 1e-9 / iters as f64, Clock::Timestamps));
        }
    }
    let t = Instant::now();
    encode(gpu, list, iters, None)?;
    gpu.sync()?;
    Ok((t.elapsed().as_secs_f64() / iters as f64, Clock::WallClock))
}

pub(crate) fn encode(
    gpu: &Gpu,
    list: &[Dispatch],
    iters: u32,
    ts: Option<(&wgpu::QuerySet, &wgpu::Buffer, &wgpu::Buffer)>,
) -> Result<()> {
    gpu.scoped("benchmark run", || {
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        {
            let tw = ts.map(|(q, _, _)| wgpu::ComputePassTimestampWrites {
                query_set: q,
                beginning_of_pass_write_index: Some(0),
                end_of_pass_write_index: Some(1),
            });
            let mut pass =
                enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("bench"), timestamp_writes: tw });
            for _ in 0..iters {
                for d in list {
                    d.encode(&mut pass);
                }
            }
        }
        if let Some((q, resolve, read)) = ts {
            enc.resolve_query_set(q, 0..2, resolve, 0);
            enc.copy_buffer_to_buffer(resolve, 0, read, 0, 16);
        }
        gpu.queue.submit([enc.finish()]);
    })
}
