//! Batched matrix multiplication with batch broadcasting and transposed operands.

use crate::autocast;
use crate::backend::{self, MatmulSpec};
use crate::shape::{broadcast, numel};
use crate::tensor::{DType, Tensor};

/// Products take operands of one dtype, or f16 beside f32 (an autocast operand meeting an f32
/// gradient in the backward pass): the kernels widen f16 as they read, and return f32.
#[track_caller]
fn check_operands(op: &str, a: &Tensor, b: &Tensor) {
    let (da, db) = (a.dtype(), b.dtype());
    let mixed = da != db
        && [da, db]
            .iter()
            .all(|d| [DType::F16, DType::F32].contains(d));
    if mixed {
        crate::ops::elementwise::check_device(op, a, b);
    } else {
        crate::ops::elementwise::check_same(op, a, b);
    }
}

impl Tensor {
    /// `self @ other` over the last two axes; leading (batch) axes broadcast.
    #[track_caller]
    pub fn matmul(&self, other: &Tensor) -> Tensor {
        self.matmul_ex(other, false, false)
    }

    /// `self @ otherᵀ` without materialising the transpose.
    #[track_caller]
    pub fn matmul_nt(&self, other: &Tensor) -> Tensor {
        self.matmul_ex(other, false, true)
    }

    /// `selfᵀ @ other` without materialising the transpose.
    #[track_caller]
    pub fn matmul_tn(&self, other: &Tensor) -> Tensor {
        self.matmul_ex(other, true, false)
    }

    /// `op(self) @ op(other)` where `op` transposes the last two axes when its flag is set.
    #[track_caller]
    pub fn matmul_ex(&self, other: &Tensor, trans_a: bool, trans_b: bool) -> Tensor {
        check_operands("matmul", self, other);
        let (a, b) = (autocast::operand(self), autocast::operand(other));
        if a.dtype() != self.dtype() || b.dtype() != other.dtype() {
            return a.matmul_ex(&b, trans_a, trans_b);
        }
        assert!(
            self.rank() >= 2 && other.rank() >= 2,
            "matmul: operands need at least 2 axes, got shapes {:?} and {:?}",
            self.shape(),
            other.shape()
        );
        let (ra, rb) = (self.rank(), other.rank());
        let (sa, sb) = (self.shape(), other.shape());
        let (m, ka) = if trans_a {
            (sa[ra - 1], sa[ra - 2])
        } else {
            (sa[ra - 2], sa[ra - 1])
        };
        let (kb, n) = if trans_b {
            (sb[rb - 1], sb[rb - 2])
        } else {
            (sb[rb - 2], sb[rb - 1])
        };
        assert_eq!(
            ka,
            kb,
            "matmul: inner dimensions differ: {:?}{} @ {:?}{}",
            sa,
            if trans_a { "ᵀ" } else { "" },
            sb,
            if trans_b { "ᵀ" } else { "" }
        );
        let batch_shape = broadcast("matmul", &sa[..ra - 2], &sb[..rb - 2]);
        let batch = numel(&batch_shape);
        // An operand whose batch is not broadcast is read with stride m·k; a single matrix with
        // stride 0; anything else is expanded to the full batch first.
        let operand = |t: &Tensor, rows: usize, cols: usize| -> (Tensor, usize) {
            let tb = &t.shape()[..t.rank() - 2];
            if numel(tb) == 1 {
                (t.clone(), 0)
            } else if numel(tb) == batch {
                (t.clone(), rows * cols)
            } else {
                let mut full = batch_shape.clone();
                full.extend_from_slice(&t.shape()[t.rank() - 2..]);
                (t.expand(&full), rows * cols)
            }
        };
        let (a, a_bs) = operand(self, m, ka);
        let (b, b_bs) = operand(other, ka, n);
        let spec = MatmulSpec {
            batch,
            m,
            k: ka,
            n,
            trans_a,
            trans_b,
            a_batch_stride: a_bs,
            b_batch_stride: b_bs,
        };
        let out = backend::matmul(&a.storage(), &b.storage(), spec);
        let mut shape = batch_shape;
        shape.extend([m, n]);
        let (x, y) = (self.clone(), other.clone());
        Tensor::from_op(out, shape, &self.device(), &[self, other], move |g| {
            let ga = if trans_a {
                y.matmul_ex(g, trans_b, true)
            } else {
                g.matmul_ex(&y, false, !trans_b)
            };
            let gb = if trans_b {
                g.matmul_ex(&x, true, trans_a)
            } else {
                x.matmul_ex(g, !trans_a, false)
            };
            vec![Some(ga.sum_to(x.shape())), Some(gb.sum_to(y.shape()))]
        })
    }

    /// A linear layer on the last axis: `self (…, k) · weightᵀ + bias` with `weight` `(n, k)` and
    /// `bias` `(n)`, giving `(…, n)`. Where the backend has the kernel, the bias is added in the
    /// product's own pass over the output.
    #[track_caller]
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
        let k = self.shape().last().copied().unwrap_or(0);
        assert!(
            self.rank() >= 1 && weight.rank() == 2 && weight.shape()[1] == k,
            "linear: input {:?} does not end in the {:?} weight's input width",
            self.shape(),
            weight.shape()
        );
        let n = weight.shape()[0];
        let mut shape = self.shape().to_vec();
        *shape.last_mut().expect("rank ≥ 1") = n;
        let x2 = self.reshape_to(&[self.numel() / k.max(1), k]);
        let Some(b) = bias else {
            return x2.matmul_nt(weight).reshape_to(&shape);
        };
        check_operands("linear", self, weight);
        crate::ops::elementwise::check_same("linear", weight, b);
        // Under autocast the product's operands (and what the backward pass saves) are f16.
        let (x2, weight) = (autocast::operand(&x2), &autocast::operand(weight));
        assert_eq!(
            b.shape(),
            [n],
            "linear: bias of shape {:?} does not match {n} outputs",
            b.shape()
        );
        let m = x2.shape()[0];
        let Some(out) = backend::linear(&x2.storage(), &weight.storage(), &b.storage(), m, k, n)
        else {
            return (&x2.matmul_nt(weight) + b).reshape_to(&shape);
        };
        let (x, w) = (x2.detach(), weight.detach());
        let y = Tensor::from_op(
            out,
            vec![m, n],
            &self.device(),
            &[&x2, weight, b],
            move |g| {
                vec![
                    Some(g.matmul(&w)),
                    Some(g.matmul_tn(&x)),
                    Some(g.sum(0, false)),
                ]
            },
        );
        y.reshape_to(&shape)
    }
}
