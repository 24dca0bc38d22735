//! Element-wise ops: unary functions, broadcasting binary ops, comparisons, `where`.

use crate::backend::{self, Binary, Unary};
use crate::shape::{broadcast, broadcast_strides};
use crate::tensor::Tensor;

/// Panics unless `a` and `b` share a device and dtype.
#[track_caller]
pub(crate) fn check_same(op: &str, a: &Tensor, b: &Tensor) {
    check_device(op, a, b);
    assert!(
        a.dtype() == b.dtype(),
        "{op}: operands have different dtypes ({:?} and {:?})",
        a.dtype(),
        b.dtype()
    );
}

/// Panics unless `a` and `b` live on one device.
#[track_caller]
pub(crate) fn check_device(op: &str, a: &Tensor, b: &Tensor) {
    assert!(
        a.device() == b.device(),
        "{op}: operands live on different devices ({:?} and {:?})",
        a.device(),
        b.device()
    );
}

impl Tensor {
    /// Applies a unary op; its backward is `g · f'(x)` from the op's derivative kernel, or, for
    /// the ops whose derivative is a constant, from `g` alone, so that `x` is not kept for it.
    pub(crate) fn unary(&self, op: Unary) -> Tensor {
        let out = backend::unary(op, &self.storage());
        let constant = matches!(op, Unary::Neg | Unary::AddScalar(_) | Unary::MulScalar(_));
        let x = (!constant).then(|| self.clone());
        Tensor::from_op(
            out,
            self.shape().to_vec(),
            &self.device(),
            &[self],
            move |g| {
                let gx = match (op, x) {
                    (Unary::Neg, _) => g.neg(),
                    (Unary::AddScalar(_), _) => g.clone(),
                    (Unary::MulScalar(c), _) => g.mul_scalar(c),
                    (_, Some(x)) => Tensor::from_storage(
                        backend::unary_backward(op, &x.storage(), &g.storage()),
                        x.shape().to_vec(),
                        x.device(),
                    ),
                    (_, None) => unreachable!("x is kept for every other op"),
                };
                vec![Some(gx)]
            },
        )
    }

    pub fn neg(&self) -> Tensor {
        self.unary(Unary::Neg)
    }
    pub fn exp(&self) -> Tensor {
        self.unary(Unary::Exp)
    }
    pub fn log(&self) -> Tensor {
        self.unary(Unary::Log)
    }
    pub fn sqrt(&self) -> Tensor {
        self.unary(Unary::Sqrt)
    }
    pub fn rsqrt(&self) -> Tensor {
        self.unary(Unary::Rsqrt)
    }
    pub fn abs(&self) -> Tensor {
        self.unary(Unary::Abs)
    }
    pub fn relu(&self) -> Tensor {
        self.unary(Unary::Relu)
    }
    /// GELU with the tanh approximation.
    pub fn gelu_tanh(&self) -> Tensor {
        self.unary(Unary::GeluTanh)
    }
    /// Exact GELU, x·Φ(x), as PyTorch's default `nn.GELU()`.
    pub fn gelu(&self) -> Tensor {
        self.unary(Unary::GeluErf)
    }
    pub fn sigmoid(&self) -> Tensor {
        self.unary(Unary::Sigmoid)
    }
    pub fn tanh(&self) -> Tensor {
        self.unary(Unary::Tanh)
    }
    pub fn silu(&self) -> Tensor {
        self.unary(Unary::Silu)
    }
    /// -1, 0 or 1 (zero gradient).
    pub fn sign(&self) -> Tensor {
        self.unary(Unary::Sign)
    }
    pub fn recip(&self) -> Tensor {
        self.unary(Unary::Recip)
    }
    pub fn square(&self) -> Tensor {
        self.unary(Unary::Square)
    }
    pub fn add_scalar(&self, c: f64) -> Tensor {
        self.unary(Unary::AddScalar(c))
    }
    pub fn mul_scalar(&self, c: f64) -> Tensor {
        self.unary(Unary::MulScalar(c))
    }
    /// x^p for a constant exponent.
    pub fn powf(&self, p: f64) -> Tensor {
        self.unary(Unary::PowScalar(p))
    }
    /// Limits values to [lo, hi]; the gradient passes where lo ≤ x ≤ hi.
    #[track_caller]
    pub fn clamp(&self, lo: f64, hi: f64) -> Tensor {
        assert!(lo <= hi, "clamp: lower bound {lo} exceeds upper bound {hi}");
        self.unary(Unary::Clamp(lo, hi))
    }

    /// Computes a broadcasting binary op: the result's storage and shape.
    #[track_caller]
    fn binary_storage(
        &self,
        op: Binary,
        other: &Tensor,
        name: &str,
    ) -> (crate::backend::Storage, Vec<usize>) {
        check_same(name, self, other);
        let shape = broadcast(name, self.shape(), other.shape());
        let out = backend::binary(
            op,
            &self.storage(),
            &broadcast_strides(self.shape(), &shape),
            &other.storage(),
            &broadcast_strides(other.shape(), &shape),
            &shape,
        );
        (out, shape)
    }

    /// A broadcasting binary op that records no gradient (comparisons).
    #[track_caller]
    fn binary_raw(&self, op: Binary, other: &Tensor, name: &str) -> Tensor {
        let (out, shape) = self.binary_storage(op, other, name);
        Tensor::from_storage(out, shape, self.device())
    }

    /// Applies a broadcasting arithmetic op and records its gradient.
    #[track_caller]
    fn binary(&self, op: Binary, other: &Tensor, name: &str) -> Tensor {
        let (out, shape) = self.binary_storage(op, other, name);
        // A sum's or difference's gradient needs only the operands' shapes, not their data.
        let shapes = (self.shape().to_vec(), other.shape().to_vec());
        let kept =
            (!matches!(op, Binary::Add | Binary::Sub)).then(|| (self.clone(), other.clone()));
        Tensor::from_op(out, shape, &self.device(), &[self, other], move |g| {
            let (ga, gb) = match (op, kept) {
                (Binary::Add, _) => (g.clone(), g.clone()),
                (Binary::Sub, _) => (g.clone(), g.neg()),
                (_, Some((a, b))) => binary_grads(op, g, &a, &b),
                (_, None) => unreachable!("the operands are kept for every other op"),
            };
            vec![Some(ga.sum_to(&shapes.0)), Some(gb.sum_to(&shapes.1))]
        })
    }

    #[track_caller]
    pub fn add(&self, o: &Tensor) -> Tensor {
        self.binary(Binary::Add, o, "add")
    }
    #[track_caller]
    pub fn sub(&self, o: &Tensor) -> Tensor {
        self.binary(Binary::Sub, o, "sub")
    }
    #[track_caller]
    pub fn mul(&self, o: &Tensor) -> Tensor {
        self.binary(Binary::Mul, o, "mul")
    }
    #[track_caller]
    pub fn div(&self, o: &Tensor) -> Tensor {
        self.binary(Binary::Div, o, "div")
    }
    /// Element-wise power with a tensor exponent (base must be positive where the exponent's
    /// gradient is needed).
    #[track_caller]
    pub fn pow(&self, o: &Tensor) -> Tensor {
        self.binary(Binary::Pow, o, "pow")
    }
    #[track_caller]
    pub fn maximum(&self, o: &Tensor) -> Tensor {
        self.binary(Binary::Max, o, "maximum")
    }
    #[track_caller]
    pub fn minimum(&self, o: &Tensor) -> Tensor {
        self.binary(Binary::Min, o, "minimum")
    }

    /// 1.0 where equal, else 0.0 (not differentiable). Named with `_` to leave `eq` to `PartialEq`.
    #[track_caller]
    pub fn eq_(&self, o: &Tensor) -> Tensor {
        self.binary_raw(Binary::Eq, o, "eq")
    }
    #[track_caller]
    pub fn ne_(&self, o: &Tensor) -> Tensor {
        self.binary_raw(Binary::Ne, o, "ne")
    }
    #[track_caller]
    pub fn lt(&self, o: &Tensor) -> Tensor {
        self.binary_raw(Binary::Lt, o, "lt")
    }
    #[track_caller]
    pub fn le(&self, o: &Tensor) -> Tensor {
        self.binary_raw(Binary::Le, o, "le")
    }
    #[track_caller]
    pub fn gt(&self, o: &Tensor) -> Tensor {
        self.binary_raw(Binary::Gt, o, "gt")
    }
    #[track_caller]
    pub fn ge(&self, o: &Tensor) -> Tensor {
        self.binary_raw(Binary::Ge, o, "ge")
    }

    /// `cond != 0 ? self : other`, all three broadcast together; differentiable in both branches.
    #[track_caller]
    pub fn where_(&self, cond: &Tensor, other: &Tensor) -> Tensor {
        check_same("where", self, other);
        check_same("where", self, cond);
        let shape = broadcast(
            "where",
            &broadcast("where", cond.shape(), self.shape()),
            other.shape(),
        );
        let out = backend::select(
            (&cond.storage(), &broadcast_strides(cond.shape(), &shape)),
            (&self.storage(), &broadcast_strides(self.shape(), &shape)),
            (&other.storage(), &broadcast_strides(other.shape(), &shape)),
            &shape,
        );
        let (c, a_shape, b_shape) = (cond.detach(), self.shape().to_vec(), other.shape().to_vec());
        Tensor::from_op(out, shape, &self.device(), &[self, other], move |g| {
            let zero = g.zeros_like();
            vec![
                Some(g.where_(&c, &zero).sum_to(&a_shape)),
                Some(zero.where_(&c, g).sum_to(&b_shape)),
            ]
        })
    }

    /// Replaces entries where `mask != 0` with `value` (gradient flows to the others).
    #[track_caller]
    pub fn masked_fill(&self, mask: &Tensor, value: f64) -> Tensor {
        let fill = self.new_from(&[value], &[]);
        fill.where_(mask, self)
    }

    /// Sums a broadcast gradient back down to `shape` (the adjoint of broadcasting).
    pub(crate) fn sum_to(&self, shape: &[usize]) -> Tensor {
        if self.shape() == shape {
            return self.clone();
        }
        let extra = self.rank() - shape.len();
        let axes: Vec<isize> = (0..self.rank())
            .filter(|&i| i < extra || (shape[i - extra] == 1 && self.shape()[i] != 1))
            .map(|i| i as isize)
            .collect();
        self.sum_axes(&axes, true).reshape_to(shape)
    }
}

/// The gradients of `op(a, b)` for output gradient `g`, at the broadcast shape (the ops whose
/// gradients read the operands).
fn binary_grads(op: Binary, g: &Tensor, a: &Tensor, b: &Tensor) -> (Tensor, Tensor) {
    match op {
        Binary::Mul => (g * b, g * a),
        Binary::Div => (g / b, -(&(g * a) / &(b * b))),
        Binary::Pow => (g * b * a.pow(&b.add_scalar(-1.0)), g * &a.pow(b) * a.log()),
        Binary::Max | Binary::Min => {
            // Ties split the gradient evenly, as PyTorch's maximum/minimum do.
            let wins = if op == Binary::Max { a.gt(b) } else { a.lt(b) };
            let share = &wins + &a.eq_(b).mul_scalar(0.5);
            (g * &share, g * &share.neg().add_scalar(1.0))
        }
        _ => unreachable!("comparisons are not differentiable"),
    }
}
