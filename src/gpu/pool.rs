//! A buffer pool: storage buffers are handed out in size classes and return to the pool when the last tensor
//! using them is dropped, so repeated ops (and, later, replayed graphs) do not allocate on every call.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

pub const STORAGE_USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

#[derive(Default)]
pub struct BufferPool {
    free: Mutex<HashMap<u64, Vec<wgpu::Buffer>>>,
    /// Bytes of every buffer this pool created, and the largest one.
    created: std::sync::atomic::AtomicU64,
    largest: std::sync::atomic::AtomicU64,
    /// A recording's arena: its buffers are reused between the dispatches of one recording, so the host never
    /// writes into them (a queue write lands before the whole submission, under every dispatch of it).
    arena: bool,
}

/// A pooled storage buffer; goes back to its pool on drop.
pub struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    class: u64,
    pool: Arc<BufferPool>,
}

impl PooledBuffer {
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("pooled buffer used after drop")
    }
    pub fn capacity(&self) -> u64 {
        self.class
    }
    /// Whether this buffer belongs to a recording's arena ([`BufferPool::arena`]): not host-writable.
    pub fn in_arena(&self) -> bool {
        self.pool.arena
    }
    /// Whether this buffer goes back to `pool` when dropped.
    pub fn is_from(&self, pool: &Arc<BufferPool>) -> bool {
        Arc::ptr_eq(&self.pool, pool)
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            let mut free = self.pool.free.lock().unwrap_or_else(|p| p.into_inner());
            free.entry(self.class).or_default().push(b);
        }
    }
}

/// Rounds a byte size up to its size class: multiples of 256 B up to 64 KiB, then four classes per power of two.
pub fn size_class(bytes: u64) -> u64 {
    let b = bytes.max(16).div_ceil(256) * 256;
    if b <= 65536 {
        return b;
    }
    let p = 1u64 << (63 - b.leading_zeros()); // highest power of two <= b
    let step = p / 4;
    b.div_ceil(step) * step
}

impl BufferPool {
    /// A recording's arena: like the default pool, but tensors from it refuse host writes.
    pub fn arena() -> BufferPool {
        BufferPool { arena: true, ..Default::default() }
    }

    /// Takes a buffer of at least `bytes` from the pool or creates one, checking the adapter's `max_buffer_size`.
    pub fn alloc(self: &Arc<Self>, device: &wgpu::Device, limits: &wgpu::Limits, bytes: u64) -> Result<PooledBuffer> {
        let class = size_class(bytes);
        if class > limits.max_buffer_size {
            return Err(Error::limit(
                "buffer allocation",
                format!("{bytes} bytes requested, adapter max_buffer_size is {}", limits.max_buffer_size),
            ));
        }
        let reused = {
            let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
            free.get_mut(&class).and_then(|v| v.pop())
        };
        let buffer = match reused {
            Some(b) => b,
            None => {
                use std::sync::atomic::Ordering::Relaxed;
                self.created.fetch_add(class, Relaxed);
                self.largest.fetch_max(class, Relaxed);
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("p2p-wgpu tensor"),
                    size: class,
                    usage: STORAGE_USAGE,
                    mapped_at_creation: false,
                })
            }
        };
        Ok(PooledBuffer { buffer: Some(buffer), class, pool: self.clone() })
    }

    /// Number of idle buffers held.
    pub fn idle(&self) -> usize {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).values().map(Vec::len).sum()
    }

    /// Bytes of all buffers this pool has created (its footprint when nothing was cleared), and the largest.
    pub fn created_bytes(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.created.load(Relaxed), self.largest.load(Relaxed))
    }

    /// Drops every idle buffer.
    pub fn clear(&self) {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_cover_and_are_bounded() {
        for bytes in [1u64, 255, 256, 257, 65536, 65537, 100_000, 1 << 20, (1 << 20) + 1, 150_000_000] {
            let c = size_class(bytes);
            assert!(c >= bytes && c.is_multiple_of(256), "{bytes} -> {c}");
            assert!(c <= bytes.max(256) * 5 / 4 + 256, "{bytes} -> {c} wastes too much");
        }
    }
}
