//! Reductions over chosen axes: sum, mean, max, min, var, argmax.

use crate::backend::{self, Reduce};
use crate::shape::{axis, split_at_axis};
use crate::tensor::Tensor;

impl Tensor {
    /// One reduction over one (resolved) axis, keeping it as size 1; no gradient recorded.
    fn reduce_raw(&self, op: Reduce, ax: usize) -> Tensor {
        let (outer, n, inner) = split_at_axis(self.shape(), ax);
        let mut shape = self.shape().to_vec();
        shape[ax] = 1;
        Tensor::from_storage(
            backend::reduce(op, &self.storage(), outer, n, inner),
            shape,
            self.device(),
        )
    }

    /// Resolves and de-duplicates axes (an empty list means all axes).
    #[track_caller]
    fn resolve_axes(&self, op: &str, axes: &[isize]) -> Vec<usize> {
        let mut v: Vec<usize> = if axes.is_empty() {
            (0..self.rank()).collect()
        } else {
            axes.iter().map(|&a| axis(op, a, self.rank())).collect()
        };
        v.sort_unstable();
        v.dedup();
        v
    }

    fn reduced_shape(&self, axes: &[usize], keepdim: bool) -> Vec<usize> {
        (0..self.rank())
            .filter_map(|i| match (axes.contains(&i), keepdim) {
                (true, true) => Some(1),
                (true, false) => None,
                (false, _) => Some(self.shape()[i]),
            })
            .collect()
    }

    /// Sum over `axes` (all axes when empty).
    #[track_caller]
    pub fn sum_axes(&self, axes: &[isize], keepdim: bool) -> Tensor {
        let axes = self.resolve_axes("sum", axes);
        let mut r = self.detach();
        for &a in &axes {
            r = r.reduce_raw(Reduce::Sum, a);
        }
        let kept = r.shape().to_vec();
        let out = r.with_shape(self.reduced_shape(&axes, keepdim));
        let in_shape = self.shape().to_vec();
        Tensor::from_op(
            out.storage(),
            out.shape().to_vec(),
            &self.device(),
            &[self],
            move |g| vec![Some(g.reshape_to(&kept).expand(&in_shape))],
        )
    }

    /// Sum over one axis.
    #[track_caller]
    pub fn sum(&self, axis: isize, keepdim: bool) -> Tensor {
        self.sum_axes(&[axis], keepdim)
    }

    /// Sum of all elements, as a 0-d tensor.
    pub fn sum_all(&self) -> Tensor {
        self.sum_axes(&[], false)
    }

    /// Mean over `axes` (all axes when empty).
    #[track_caller]
    pub fn mean_axes(&self, axes: &[isize], keepdim: bool) -> Tensor {
        let n: usize = self
            .resolve_axes("mean", axes)
            .iter()
            .map(|&a| self.shape()[a])
            .product();
        self.sum_axes(axes, keepdim).mul_scalar(1.0 / n as f64)
    }

    #[track_caller]
    pub fn mean(&self, axis: isize, keepdim: bool) -> Tensor {
        self.mean_axes(&[axis], keepdim)
    }

    pub fn mean_all(&self) -> Tensor {
        self.mean_axes(&[], false)
    }

    /// Σx² of each of `tensors`, as one vector (no gradient): the parts of a global gradient
    /// norm, in one launch per eight tensors on the GPU instead of a square and a sum each.
    pub fn sum_squares(tensors: &[Tensor]) -> Tensor {
        assert!(!tensors.is_empty(), "sum_squares: no tensors");
        let storages: Vec<_> = tensors.iter().map(Tensor::storage).collect();
        let refs: Vec<&backend::Storage> = storages.iter().map(|s| &**s).collect();
        match backend::sum_squares(&refs) {
            Some(s) => Tensor::from_storage(s, vec![tensors.len()], tensors[0].device()),
            None => crate::no_grad(|| {
                let sums: Vec<Tensor> = tensors.iter().map(|t| t.square().sum_all()).collect();
                Tensor::stack(&sums.iter().collect::<Vec<_>>(), 0)
            }),
        }
    }

    /// Variance over `axes` with Bessel's `correction` (1 = unbiased, as PyTorch's default).
    #[track_caller]
    pub fn var_axes(&self, axes: &[isize], keepdim: bool, correction: usize) -> Tensor {
        let n: usize = self
            .resolve_axes("var", axes)
            .iter()
            .map(|&a| self.shape()[a])
            .product();
        let centred = self - &self.mean_axes(axes, true);
        centred
            .square()
            .sum_axes(axes, keepdim)
            .mul_scalar(1.0 / (n as f64 - correction as f64).max(0.0))
    }

    #[track_caller]
    pub fn var(&self, axis: isize, keepdim: bool, correction: usize) -> Tensor {
        self.var_axes(&[axis], keepdim, correction)
    }

    /// Max or min over one axis; ties share the gradient evenly.
    #[track_caller]
    fn extremum(&self, op: Reduce, name: &str, ax: isize, keepdim: bool) -> Tensor {
        let a = axis(name, ax, self.rank());
        assert!(
            self.shape()[a] > 0,
            "{name}: cannot reduce the empty axis {ax} of shape {:?}",
            self.shape()
        );
        let kept = self.reduce_raw(op, a);
        let out = kept.with_shape(self.reduced_shape(&[a], keepdim));
        let (x, m) = (self.detach(), kept);
        Tensor::from_op(
            out.storage(),
            out.shape().to_vec(),
            &self.device(),
            &[self],
            move |g| {
                let hit = x.eq_(&m);
                let share = &hit / &hit.sum(a as isize, true);
                vec![Some(&share * &g.reshape_to(m.shape()))]
            },
        )
    }

    #[track_caller]
    pub fn max(&self, axis: isize, keepdim: bool) -> Tensor {
        self.extremum(Reduce::Max, "max", axis, keepdim)
    }

    #[track_caller]
    pub fn min(&self, axis: isize, keepdim: bool) -> Tensor {
        self.extremum(Reduce::Min, "min", axis, keepdim)
    }

    /// Index of the first maximum along `axis`, as floats (not differentiable).
    #[track_caller]
    pub fn argmax(&self, axis: isize, keepdim: bool) -> Tensor {
        let a = crate::shape::axis("argmax", axis, self.rank());
        assert!(
            self.shape()[a] > 0,
            "argmax: cannot reduce the empty axis {axis} of shape {:?}",
            self.shape()
        );
        let r = self.reduce_raw(Reduce::ArgMax, a);
        r.with_shape(self.reduced_shape(&[a], keepdim))
    }

    /// Index of the first minimum along `axis`, as floats (not differentiable).
    #[track_caller]
    pub fn argmin(&self, axis: isize, keepdim: bool) -> Tensor {
        let a = crate::shape::axis("argmin", axis, self.rank());
        assert!(
            self.shape()[a] > 0,
            "argmin: cannot reduce the empty axis {axis} of shape {:?}",
            self.shape()
        );
        let r = self.reduce_raw(Reduce::ArgMin, a);
        r.with_shape(self.reduced_shape(&[a], keepdim))
    }
}
