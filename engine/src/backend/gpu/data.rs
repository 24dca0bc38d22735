//! Device buffers owned by tensors; dropping the last owner returns the buffer to the pool.

use super::context::GpuContext;
use std::sync::Arc;

/// An f32 buffer on the GPU.
pub struct GpuData {
    buf: Arc<PooledBuffer>,
    len: usize,
}

struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    ctx: Arc<GpuContext>,
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            self.ctx.release(b);
        }
    }
}

impl GpuData {
    /// An uninitialised buffer of `len` floats (every kernel writes all of its output).
    #[track_caller]
    pub(crate) fn alloc(ctx: &Arc<GpuContext>, len: usize) -> GpuData {
        GpuData::wrap(ctx, ctx.alloc(len as u64 * 4, false), len)
    }

    fn wrap(ctx: &Arc<GpuContext>, buffer: wgpu::Buffer, len: usize) -> GpuData {
        GpuData {
            buf: Arc::new(PooledBuffer {
                buffer: Some(buffer),
                ctx: ctx.clone(),
            }),
            len,
        }
    }

    /// Copies host values to a new device buffer.
    #[track_caller]
    pub fn upload(ctx: &Arc<GpuContext>, data: &[f32]) -> GpuData {
        let d = GpuData::wrap(ctx, ctx.alloc(data.len() as u64 * 4, true), data.len());
        ctx.write(d.buffer(), bytemuck::cast_slice(data));
        d
    }

    /// Copies the values back to the host, waiting for the work that produces them; `Err` if
    /// the device failed on the way.
    pub fn download(&self) -> crate::error::Result<Vec<f32>> {
        let bytes = self.buf.ctx.read(self.buffer(), self.len as u64 * 4)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn ctx(&self) -> &Arc<GpuContext> {
        &self.buf.ctx
    }

    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        self.buf.buffer.as_ref().expect("buffer present until drop")
    }
}

impl std::fmt::Debug for GpuData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuData({} floats)", self.len)
    }
}
