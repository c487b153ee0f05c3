//! Recording and running kernel dispatches. An op builds `Dispatch`es (pipeline + bind group + grid); a list of
//! them runs in one compute pass and one submission, inside error scopes. Lists can be kept and run again, which
//! is what the graph executor replays each step.
use std::sync::Arc;

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};

use super::Gpu;
use super::pipeline::Kernel;
use super::pool::PooledBuffer;

/// A byte range of a pooled storage buffer that a kernel binds (what a tensor is to the runtime).
pub trait Storage {
    /// The pooled buffer holding the range.
    fn pooled(&self) -> &Arc<PooledBuffer>;
    /// Byte offset of the range in the buffer.
    fn offset(&self) -> u64;
    /// Bytes the binding covers (a multiple of 4, at least 4).
    fn binding_bytes(&self) -> u64;
    /// What the range holds, for errors (a tensor's shape and type).
    fn describe(&self) -> String;
}

/// One resource bound at a binding index of group 0.
pub enum Bind<'a> {
    /// A tensor (any [`Storage`]) as a storage buffer: its byte range.
    T(&'a dyn Storage),
    /// Bytes of a typed uniform struct (`bytemuck::bytes_of(&params)`).
    Uniform(&'a [u8]),
    /// A whole buffer the caller keeps (a persistent uniform block it rewrites with queue writes between runs).
    Buffer(&'a wgpu::Buffer),
}

/// A ready-to-run kernel launch.
pub struct Dispatch {
    pub label: String,
    pub pipeline: Arc<wgpu::ComputePipeline>,
    pub bind_group: wgpu::BindGroup,
    pub groups: [u32; 3],
    /// The buffers of the shared pool (`Gpu::pool`) this dispatch binds, held as long as it exists: a bind group
    /// keeps its wgpu buffers alive but not their place in the pool, so a tensor dropped while a kept recording
    /// still binds it could be handed to a later allocation (and written by the host) before the recording is
    /// replayed. Buffers of a recording's own arena are not held: reusing them within that recording is the point.
    pub keep: Vec<Arc<PooledBuffer>>,
}

impl Dispatch {
    /// Records this launch into `pass`.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.groups[0], self.groups[1], self.groups[2]);
    }
}

/// Largest workgroup count per grid dimension that every adapter accepts.
pub const MAX_GROUPS: u32 = 65535;

/// Splits `n` workgroups into an (x, y) grid; kernels rebuild the linear index as `wid.x + wid.y * nwg.x`.
pub fn grid_1d(n: u32) -> [u32; 3] {
    if n <= MAX_GROUPS {
        [n.max(1), 1, 1]
    } else {
        let y = n.div_ceil(MAX_GROUPS);
        [n.div_ceil(y), y, 1]
    }
}

impl Gpu {
    /// The binding of a storage range, refused (as an op limit) when it exceeds the adapter's binding size.
    fn storage_binding<'a>(&self, t: &'a dyn Storage, op: &str) -> Result<wgpu::BindingResource<'a>> {
        let size = t.binding_bytes();
        let max = self.limits.max_storage_buffer_binding_size;
        if size > max {
            return Err(Error::limit(
                op,
                format!(
                    "a {} needs a {size}-byte binding; this adapter binds at most {max} bytes (the op must split it)",
                    t.describe()
                ),
            ));
        }
        Ok(wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: t.pooled().buffer(),
            offset: t.offset(),
            size: std::num::NonZeroU64::new(size),
        }))
    }

    /// Builds a dispatch of `kernel` with `binds` at their binding indices and a grid of `groups`.
    pub fn dispatch(&self, op: &str, kernel: &Kernel, binds: &[(u32, Bind)], groups: [u32; 3]) -> Result<Dispatch> {
        for (i, g) in groups.iter().enumerate() {
            if *g > self.limits.max_compute_workgroups_per_dimension {
                return Err(Error::limit(
                    op,
                    format!(
                        "grid dimension {i} needs {g} workgroups, adapter allows {}",
                        self.limits.max_compute_workgroups_per_dimension
                    ),
                ));
            }
        }
        let pipeline = self.pipeline(kernel)?;
        let mut uniforms = Vec::new();
        for (_, b) in binds {
            if let Bind::Uniform(bytes) = b {
                uniforms.push(self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(op),
                    contents: bytes,
                    usage: wgpu::BufferUsages::UNIFORM,
                }));
            }
        }
        let mut entries = Vec::with_capacity(binds.len());
        let mut u = uniforms.iter();
        for (idx, b) in binds {
            let resource = match b {
                Bind::T(t) => self.storage_binding(*t, op)?,
                Bind::Uniform(_) => u.next().expect("one uniform buffer per uniform bind").as_entire_binding(),
                Bind::Buffer(b) => b.as_entire_binding(),
            };
            entries.push(wgpu::BindGroupEntry { binding: *idx, resource });
        }
        let layout = pipeline.get_bind_group_layout(0);
        let bind_group = self.scoped(&format!("{op}: binding {kernel}"), || {
            self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(op),
                layout: &layout,
                entries: &entries,
            })
        })?;
        let keep = binds
            .iter()
            .filter_map(|(_, b)| match b {
                Bind::T(t) if t.pooled().is_from(&self.pool) => Some(t.pooled().clone()),
                _ => None,
            })
            .collect();
        Ok(Dispatch { label: op.to_string(), pipeline, bind_group, groups, keep })
    }

    /// Encodes `list` into one compute pass, submits it, and reports any GPU error. Does not wait.
    pub fn run(&self, list: &[Dispatch]) -> Result<()> {
        super::timing::encode(self, list, 1, None)
    }

    /// Encodes the dispatches of `list` (e.g. several kept recordings chained) into one compute pass and one
    /// submission, like `run`; returns the submission's index for [`Gpu::wait_for`]. Does not wait.
    pub fn run_seq<'d>(&self, list: impl IntoIterator<Item = &'d Dispatch>) -> Result<wgpu::SubmissionIndex> {
        if let Some(p) = &self.profile {
            return p.run_each(self, list);
        }
        self.submit_pass(list)
    }

    /// One compute pass of `list`, submitted (the body of [`Gpu::run_seq`] without the profile).
    pub(crate) fn submit_pass<'d>(
        &self,
        list: impl IntoIterator<Item = &'d Dispatch>,
    ) -> Result<wgpu::SubmissionIndex> {
        self.scoped("run", || {
            let mut enc = self.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
                for d in list {
                    d.encode(&mut pass);
                }
            }
            self.queue.submit([enc.finish()])
        })
    }

    /// Waits until submission `index` (from [`Gpu::run_seq`]) has finished, and reports any GPU fault.
    pub fn wait_for(&self, index: wgpu::SubmissionIndex) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait { submission_index: Some(index), timeout: None })
            .map_err(|e| Error::Gpu { context: "poll".into(), message: e.to_string() })?;
        self.take_fault()
    }

    /// Builds and runs one dispatch.
    pub fn launch(&self, op: &str, kernel: &Kernel, binds: &[(u32, Bind)], groups: [u32; 3]) -> Result<()> {
        let d = self.dispatch(op, kernel, binds, groups)?;
        self.run(std::slice::from_ref(&d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_covers() {
        for n in [1u32, 65535, 65536, 200_000, 4_000_000] {
            let g = grid_1d(n);
            assert!(g[0] <= MAX_GROUPS && g[1] <= MAX_GROUPS);
            assert!(g[0] * g[1] >= n);
        }
    }
}
