//! Differentiable tensor ops. Each checks its arguments, runs backend primitives and records a
//! backward pass written in terms of other ops.

mod arith;
mod attention;
pub(crate) mod elementwise;
mod matmul;
pub mod nn;
mod reduce;
mod resize;
mod view;
