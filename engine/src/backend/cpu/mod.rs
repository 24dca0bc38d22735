//! The CPU backend: the reference every other backend is tested against, and a real backend for
//! machines without a GPU. Kernels are generic over f32 and f64 (f64 is for gradient checks);
//! large loops are split across cores with rayon, matrix products go to the `gemm` crate.

mod elementwise;
mod matmul;
mod nn;
mod reduce;

pub use elementwise::{binary, concat, gather_strided, select, unary, unary_backward};
pub use matmul::matmul;
pub use nn::{
    attention, index_add, index_select, layer_norm, layer_norm_backward, softmax, softmax_backward,
};
pub use reduce::reduce;

use crate::DType;
use num_traits::Float;

/// Work below this many elements runs on the calling thread: splitting costs more than it saves.
pub(crate) const PAR_MIN: usize = 1 << 15;

/// Element types the CPU kernels are written for.
pub trait Elem: Float + Send + Sync + std::fmt::Debug + 'static {
    fn from_f64(v: f64) -> Self;
    fn erf(self) -> Self;
}

impl Elem for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn erf(self) -> Self {
        libm::erff(self)
    }
}

impl Elem for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
    fn erf(self) -> Self {
        libm::erf(self)
    }
}

/// A host buffer of one dtype.
#[derive(Clone, Debug)]
pub enum CpuData {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl CpuData {
    pub fn len(&self) -> usize {
        match self {
            CpuData::F32(v) => v.len(),
            CpuData::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> DType {
        match self {
            CpuData::F32(_) => DType::F32,
            CpuData::F64(_) => DType::F64,
        }
    }

    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            CpuData::F32(v) => v.clone(),
            CpuData::F64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            CpuData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            CpuData::F64(v) => v.clone(),
        }
    }

    /// Same values in another dtype.
    pub fn cast(&self, dtype: DType) -> CpuData {
        match dtype {
            DType::F32 => CpuData::F32(self.to_f32()),
            DType::F64 => CpuData::F64(self.to_f64()),
        }
    }
}

/// Runs a generic kernel on one buffer, keeping its dtype.
macro_rules! map1 {
    ($x:expr, $v:ident => $e:expr) => {
        match $x {
            CpuData::F32($v) => CpuData::F32($e),
            CpuData::F64($v) => CpuData::F64($e),
        }
    };
}

/// Runs a generic kernel on buffers that must share a dtype.
macro_rules! map_same {
    ($op:expr; $($x:ident),+ => $e:expr) => {
        match ($($x,)+) {
            ($(CpuData::F32($x),)+) => CpuData::F32($e),
            ($(CpuData::F64($x),)+) => CpuData::F64($e),
            #[allow(unreachable_patterns)]
            _ => panic!("{}: operands have different dtypes", $op),
        }
    };
}

pub(crate) use {map1, map_same};
