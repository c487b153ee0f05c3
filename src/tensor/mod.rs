//! GPU tensors: a shape, an element type (f32, f16 or u32) and a byte range of a pooled storage buffer.
//! Upload goes through the queue's staging writes; download copies into a mappable staging buffer.
use std::sync::Arc;

use half::f16;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::gpu::pool::{BufferPool, PooledBuffer};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    U32,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F16 => 2,
            DType::F32 | DType::U32 => 4,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::U32 => "u32",
        }
    }
}

#[derive(Clone)]
pub struct Tensor {
    buf: Arc<PooledBuffer>,
    /// Byte offset of element 0 in the buffer.
    offset: u64,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {})", self.shape, self.dtype.name())
    }
}

/// Byte length rounded up to the 4-byte granularity that buffer copies and bindings need.
fn padded(bytes: u64) -> u64 {
    bytes.div_ceil(4) * 4
}

impl Tensor {
    /// An uninitialised tensor (contents are whatever the pooled buffer held).
    pub fn empty(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Tensor::empty_in(gpu, &gpu.pool, shape, dtype)
    }

    /// An uninitialised tensor from `pool` (a plan's own arena, so that its buffers are never handed to anyone
    /// else while the plan's recording may still run).
    pub fn empty_in(gpu: &Gpu, pool: &Arc<BufferPool>, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let bytes = padded((n * dtype.size()) as u64);
        let buf = pool.alloc(&gpu.device, &gpu.limits, bytes)?;
        Ok(Tensor { buf: Arc::new(buf), offset: 0, shape: shape.to_vec(), dtype })
    }

    /// Uploads f32 values, converting to `dtype` (f32 or f16).
    pub fn from_f32(gpu: &Gpu, shape: &[usize], dtype: DType, data: &[f32]) -> Result<Tensor> {
        let t = Tensor::empty(gpu, shape, dtype)?;
        t.write_f32(gpu, data)?;
        Ok(t)
    }

    /// Uploads u32 values (token ids, indices).
    pub fn from_u32(gpu: &Gpu, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        let t = Tensor::empty(gpu, shape, DType::U32)?;
        t.check_len("upload", data.len())?;
        t.write_bytes(gpu, bytemuck::cast_slice(data))?;
        Ok(t)
    }

    fn check_len(&self, op: &str, len: usize) -> Result<()> {
        if len != self.numel() {
            return Err(Error::shape(op, format!("{} values for a tensor of shape {:?}", len, self.shape)));
        }
        Ok(())
    }

    /// Overwrites the contents with f32 values converted to this tensor's dtype.
    pub fn write_f32(&self, gpu: &Gpu, data: &[f32]) -> Result<()> {
        self.check_len("upload", data.len())?;
        match self.dtype {
            DType::F32 => self.write_bytes(gpu, bytemuck::cast_slice(data)),
            DType::F16 => {
                let h: Vec<f16> = data.iter().map(|&x| f16::from_f32(x)).collect();
                self.write_bytes(gpu, bytemuck::cast_slice(&h))
            }
            DType::U32 => Err(Error::shape("upload", "f32 values written to a u32 tensor")),
        }
    }

    /// Fills every element with `value` (tests poison outputs with NaN this way).
    pub fn fill(&self, gpu: &Gpu, value: f32) -> Result<()> {
        self.write_f32(gpu, &vec![value; self.numel()])
    }

    fn write_bytes(&self, gpu: &Gpu, bytes: &[u8]) -> Result<()> {
        if self.buf.in_arena() {
            return Err(Error::msg(format!(
                "host write into a {:?} {} tensor of a recording's arena: its buffer may be reused by other \
                 dispatches of the recording (allocate persistent inputs with Ctx::input)",
                self.shape,
                self.dtype.name()
            )));
        }
        let mut v = bytes.to_vec();
        v.resize(padded(bytes.len() as u64) as usize, 0);
        gpu.scoped("tensor upload", || gpu.queue.write_buffer(self.buffer(), self.offset, &v))
    }

    /// Downloads as f32 (f16 widened). Waits for all submitted work.
    pub fn to_f32(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let bytes = self.read_bytes(gpu)?;
        Ok(match self.dtype {
            DType::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(&bytes),
            DType::F16 => bytemuck::pod_collect_to_vec::<u8, f16>(&bytes).iter().map(|h| h.to_f32()).collect(),
            DType::U32 => bytemuck::pod_collect_to_vec::<u8, u32>(&bytes).iter().map(|&u| u as f32).collect(),
        })
    }

    /// Downloads u32 contents.
    pub fn to_u32(&self, gpu: &Gpu) -> Result<Vec<u32>> {
        if self.dtype != DType::U32 {
            return Err(Error::shape("download", format!("to_u32 on a {} tensor", self.dtype.name())));
        }
        Ok(bytemuck::pod_collect_to_vec::<u8, u32>(&self.read_bytes(gpu)?))
    }

    fn read_bytes(&self, gpu: &Gpu) -> Result<Vec<u8>> {
        let len = self.bytes();
        let size = padded(len);
        let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("download staging"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        gpu.scoped("tensor download", || {
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            enc.copy_buffer_to_buffer(self.buffer(), self.offset, &staging, 0, size);
            gpu.queue.submit([enc.finish()]);
        })?;
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        gpu.sync()?;
        rx.recv()
            .map_err(|_| Error::Gpu { context: "download".into(), message: "map callback never ran".into() })?
            .map_err(|e| Error::Gpu { context: "download".into(), message: e.to_string() })?;
        let view =
            slice.get_mapped_range().map_err(|e| Error::Gpu { context: "download".into(), message: e.to_string() })?;
        let out = view[..len as usize].to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn bytes(&self) -> u64 {
        (self.numel() * self.dtype.size()) as u64
    }
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buf.buffer()
    }
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The same data with another shape of equal element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != self.numel() {
            return Err(Error::shape("reshape", format!("{:?} to {:?}", self.shape, shape)));
        }
        Ok(Tensor { shape: shape.to_vec(), ..self.clone() })
    }

    /// Rows `start..start+len` of the leading dimension, as a view. The byte offset must meet the adapter's
    /// storage offset alignment (256 bytes on most adapters).
    pub fn rows(&self, gpu: &Gpu, start: usize, len: usize) -> Result<Tensor> {
        let lead = *self.shape.first().ok_or_else(|| Error::shape("rows", "scalar tensor"))?;
        if start + len > lead {
            return Err(Error::shape("rows", format!("rows {start}..{} of {lead}", start + len)));
        }
        let row_bytes = (self.numel() / lead.max(1) * self.dtype.size()) as u64;
        let offset = self.offset + start as u64 * row_bytes;
        let align = gpu.limits.min_storage_buffer_offset_alignment as u64;
        if !offset.is_multiple_of(align) {
            return Err(Error::limit("rows", format!("view offset {offset} is not a multiple of {align}")));
        }
        let mut shape = self.shape.clone();
        shape[0] = len;
        Ok(Tensor { buf: self.buf.clone(), offset, shape, dtype: self.dtype })
    }

    /// This tensor as a storage binding, checked against `max_storage_buffer_binding_size`.
    /// Whether the tensor's buffer belongs to `pool`.
    pub fn is_from(&self, pool: &Arc<BufferPool>) -> bool {
        self.buf.is_from(pool)
    }

    /// Checks shape and dtype; `op` and `name` go into the error.
    pub fn expect(&self, op: &str, name: &str, shape: &[usize], dtype: DType) -> Result<()> {
        if self.shape != shape || self.dtype != dtype {
            return Err(Error::shape(
                op,
                format!("{name} is {:?} {}, expected {:?} {}", self.shape, self.dtype.name(), shape, dtype.name()),
            ));
        }
        Ok(())
    }
}

impl crate::gpu::Storage for Tensor {
    fn pooled(&self) -> &Arc<PooledBuffer> {
        &self.buf
    }
    fn offset(&self) -> u64 {
        self.offset
    }
    fn binding_bytes(&self) -> u64 {
        padded(self.bytes()).max(4)
    }
    fn describe(&self) -> String {
        format!("{:?} {} tensor", self.shape, self.dtype.name())
    }
}
