//! Device buffers owned by tensors; dropping the last owner returns the buffer to the pool.

use super::context::GpuContext;
use crate::DType;
use std::sync::Arc;

/// A buffer of f32 or (where the adapter has `SHADER_F16`) f16 elements on the GPU.
pub struct GpuData {
    buf: Arc<PooledBuffer>,
    len: usize,
    dtype: DType,
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
    /// An uninitialised buffer of `len` f32s (every kernel writes all of its output).
    #[track_caller]
    pub(crate) fn alloc(ctx: &Arc<GpuContext>, len: usize) -> GpuData {
        GpuData::alloc_as(ctx, len, DType::F32)
    }

    /// An uninitialised buffer of `len` elements of `dtype` (f32 or f16).
    #[track_caller]
    pub(crate) fn alloc_as(ctx: &Arc<GpuContext>, len: usize, dtype: DType) -> GpuData {
        let size = match dtype {
            DType::F32 => 4,
            DType::F16 => 2,
            DType::F64 => panic!("internal: the GPU stores no f64"),
        };
        GpuData::wrap(ctx, ctx.alloc(len as u64 * size, false), len, dtype)
    }

    fn wrap(ctx: &Arc<GpuContext>, buffer: wgpu::Buffer, len: usize, dtype: DType) -> GpuData {
        ctx.hold(buffer.size());
        GpuData {
            buf: Arc::new(PooledBuffer {
                buffer: Some(buffer),
                ctx: ctx.clone(),
            }),
            len,
            dtype,
        }
    }

    /// Copies host values to a new device buffer.
    #[track_caller]
    pub fn upload(ctx: &Arc<GpuContext>, data: &[f32]) -> GpuData {
        let bytes = data.len() as u64 * 4;
        let d = GpuData::wrap(ctx, ctx.alloc(bytes, true), data.len(), DType::F32);
        ctx.write(d.buffer(), bytemuck::cast_slice(data));
        d
    }

    /// Copies the values back to the host as f32 (f16 widened exactly), waiting for the work
    /// that produces them; `Err` if the device failed on the way.
    pub fn download(&self) -> crate::error::Result<Vec<f32>> {
        if self.dtype == DType::F16 {
            let bytes = self.buf.ctx.read(self.buffer(), self.len as u64 * 2)?;
            let halves: Vec<u16> = bytemuck::pod_collect_to_vec(&bytes);
            return Ok(halves
                .into_iter()
                .map(|h| half::f16::from_bits(h).to_f32())
                .collect());
        }
        let bytes = self.buf.ctx.read(self.buffer(), self.len as u64 * 4)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// F32, or F16 for a buffer of halves.
    pub fn dtype(&self) -> DType {
        self.dtype
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
        write!(f, "GpuData({} × {:?})", self.len, self.dtype)
    }
}
