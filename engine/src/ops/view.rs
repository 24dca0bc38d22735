//! Shape ops: reshape, permute, narrow, expand, cat/stack, index_select.

use crate::backend;
use crate::shape::{axis, broadcast_strides, numel, split_at_axis, strides};
use crate::tensor::Tensor;

impl Tensor {
    /// The same data under a new shape (one dimension may be -1 to be inferred). Shares storage.
    #[track_caller]
    pub fn reshape(&self, shape: &[isize]) -> Tensor {
        let shape = self.infer_shape(shape);
        if shape == self.shape() {
            return self.clone();
        }
        let in_shape = self.shape().to_vec();
        let out = self.with_shape(shape.clone());
        Tensor::from_op(out.storage(), shape, &self.device(), &[self], move |g| {
            vec![Some(g.reshape_to(&in_shape))]
        })
    }

    /// [`Tensor::reshape`] with an exact `usize` shape.
    #[track_caller]
    pub fn reshape_to(&self, shape: &[usize]) -> Tensor {
        let s: Vec<isize> = shape.iter().map(|&d| d as isize).collect();
        self.reshape(&s)
    }

    /// Alias of [`Tensor::reshape`]: tensors are always contiguous, so every view is free.
    #[track_caller]
    pub fn view(&self, shape: &[isize]) -> Tensor {
        self.reshape(shape)
    }

    #[track_caller]
    fn infer_shape(&self, shape: &[isize]) -> Vec<usize> {
        let n = self.numel();
        let unknown = shape.iter().filter(|&&d| d == -1).count();
        assert!(
            unknown <= 1 && shape.iter().all(|&d| d >= -1),
            "reshape: invalid target shape {shape:?} for a tensor of shape {:?}",
            self.shape()
        );
        let known: usize = shape
            .iter()
            .filter(|&&d| d >= 0)
            .map(|&d| d as usize)
            .product();
        let out: Vec<usize> = shape
            .iter()
            .map(|&d| {
                if d == -1 {
                    n.checked_div(known).unwrap_or(0)
                } else {
                    d as usize
                }
            })
            .collect();
        assert_eq!(
            numel(&out),
            n,
            "reshape: cannot view a tensor of shape {:?} ({n} elements) as {shape:?}",
            self.shape()
        );
        out
    }

    /// Flattens dimensions `start..` into one.
    #[track_caller]
    pub fn flatten(&self, start: isize) -> Tensor {
        let s = axis("flatten", start, self.rank());
        let mut shape: Vec<isize> = self.shape()[..s].iter().map(|&d| d as isize).collect();
        shape.push(-1);
        self.reshape(&shape)
    }

    /// Inserts a dimension of size 1 at `axis` (which may equal the rank).
    #[track_caller]
    pub fn unsqueeze(&self, ax: isize) -> Tensor {
        let a = axis("unsqueeze", ax, self.rank() + 1);
        let mut shape = self.shape().to_vec();
        shape.insert(a, 1);
        self.reshape_to(&shape)
    }

    /// Removes the size-1 dimension `axis`.
    #[track_caller]
    pub fn squeeze(&self, ax: isize) -> Tensor {
        let a = axis("squeeze", ax, self.rank());
        assert_eq!(
            self.shape()[a],
            1,
            "squeeze: axis {ax} of shape {:?} is not 1",
            self.shape()
        );
        let mut shape = self.shape().to_vec();
        shape.remove(a);
        self.reshape_to(&shape)
    }

    /// Reorders dimensions: output dimension i is input dimension `perm[i]`.
    #[track_caller]
    pub fn permute(&self, perm: &[usize]) -> Tensor {
        let r = self.rank();
        let mut seen = vec![false; r];
        assert!(
            perm.len() == r
                && perm
                    .iter()
                    .all(|&p| p < r && !std::mem::replace(&mut seen[p], true)),
            "permute: {perm:?} is not a permutation of the {r} axes of shape {:?}",
            self.shape()
        );
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return self.clone();
        }
        let st = strides(self.shape());
        let shape: Vec<usize> = perm.iter().map(|&p| self.shape()[p]).collect();
        let src_strides: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
        let out = backend::gather_strided(&self.storage(), 0, &src_strides, &shape);
        let mut inverse = vec![0; r];
        for (i, &p) in perm.iter().enumerate() {
            inverse[p] = i;
        }
        Tensor::from_op(out, shape, &self.device(), &[self], move |g| {
            vec![Some(g.permute(&inverse))]
        })
    }

    /// Swaps two axes.
    #[track_caller]
    pub fn transpose(&self, a: isize, b: isize) -> Tensor {
        let (a, b) = (
            axis("transpose", a, self.rank()),
            axis("transpose", b, self.rank()),
        );
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Transpose of a matrix (the last two axes).
    #[track_caller]
    pub fn t(&self) -> Tensor {
        assert!(
            self.rank() >= 2,
            "t: needs at least 2 axes, got shape {:?}",
            self.shape()
        );
        self.transpose(-2, -1)
    }

    /// `len` entries of `axis` starting at `start` (a slice).
    #[track_caller]
    pub fn narrow(&self, ax: isize, start: usize, len: usize) -> Tensor {
        let a = axis("narrow", ax, self.rank());
        let size = self.shape()[a];
        assert!(
            start + len <= size,
            "narrow: range {start}..{} is out of bounds for axis {ax} of shape {:?}",
            start + len,
            self.shape()
        );
        if start == 0 && len == size {
            return self.clone();
        }
        let st = strides(self.shape());
        let mut shape = self.shape().to_vec();
        shape[a] = len;
        let out = backend::gather_strided(&self.storage(), start * st[a], &st, &shape);
        let x = self.detach();
        Tensor::from_op(out, shape, &self.device(), &[self], move |g| {
            let mut parts = Vec::new();
            let pad = |n: usize| {
                let mut s = x.shape().to_vec();
                s[a] = n;
                g.full_shaped(&s, 0.0)
            };
            let (before, after) = (pad(start), pad(size - start - len));
            parts.push(&before);
            parts.push(g);
            parts.push(&after);
            vec![Some(Tensor::cat(&parts, a as isize))]
        })
    }

    /// Broadcasts to `shape` (NumPy rules), materialising the copy.
    #[track_caller]
    pub fn expand(&self, shape: &[usize]) -> Tensor {
        let target = crate::shape::broadcast("expand", self.shape(), shape);
        assert_eq!(
            target,
            shape,
            "expand: shape {:?} cannot be expanded to {shape:?}",
            self.shape()
        );
        if self.shape() == shape {
            return self.clone();
        }
        let out = backend::gather_strided(
            &self.storage(),
            0,
            &broadcast_strides(self.shape(), shape),
            shape,
        );
        let in_shape = self.shape().to_vec();
        Tensor::from_op(out, shape.to_vec(), &self.device(), &[self], move |g| {
            vec![Some(g.sum_to(&in_shape))]
        })
    }

    /// Joins tensors along an existing axis.
    #[track_caller]
    pub fn cat(parts: &[&Tensor], ax: isize) -> Tensor {
        assert!(!parts.is_empty(), "cat: needs at least one tensor");
        let first = parts[0];
        let a = axis("cat", ax, first.rank());
        for p in parts {
            crate::ops::elementwise::check_same("cat", first, p);
            let same = p.rank() == first.rank()
                && (0..first.rank()).all(|i| i == a || p.shape()[i] == first.shape()[i]);
            assert!(
                same,
                "cat: shape {:?} does not match {:?} outside axis {ax}",
                p.shape(),
                first.shape()
            );
        }
        let sizes: Vec<usize> = parts.iter().map(|p| p.shape()[a]).collect();
        let (outer, _, inner) = split_at_axis(first.shape(), a);
        let storages: Vec<_> = parts.iter().map(|p| p.storage()).collect();
        let refs: Vec<&backend::Storage> = storages.iter().map(|s| &**s).collect();
        let out = backend::concat(&refs, outer, &sizes, inner);
        let mut shape = first.shape().to_vec();
        shape[a] = sizes.iter().sum();
        Tensor::from_op(out, shape, &first.device(), parts, move |g| {
            let mut start = 0;
            sizes
                .iter()
                .map(|&s| {
                    start += s;
                    Some(g.narrow(a as isize, start - s, s))
                })
                .collect()
        })
    }

    /// Joins same-shaped tensors along a new axis.
    #[track_caller]
    pub fn stack(parts: &[&Tensor], ax: isize) -> Tensor {
        assert!(!parts.is_empty(), "stack: needs at least one tensor");
        let a = axis("stack", ax, parts[0].rank() + 1) as isize;
        let expanded: Vec<Tensor> = parts
            .iter()
            .map(|p| {
                assert_eq!(p.shape(), parts[0].shape(), "stack: shapes differ");
                p.unsqueeze(a)
            })
            .collect();
        Tensor::cat(&expanded.iter().collect::<Vec<_>>(), a)
    }

    /// Picks entries `idx` along `axis` (an embedding lookup is `weight.index_select(0, ids)`);
    /// the backward pass scatter-adds, so repeated indices accumulate.
    #[track_caller]
    pub fn index_select(&self, ax: isize, idx: &[u32]) -> Tensor {
        let a = axis("index_select", ax, self.rank());
        let (outer, n, inner) = split_at_axis(self.shape(), a);
        if let Some(&bad) = idx.iter().find(|&&i| i as usize >= n) {
            panic!(
                "index_select: index {bad} is out of range for axis {ax} of shape {:?}",
                self.shape()
            );
        }
        let out = backend::index_select(&self.storage(), outer, n, inner, idx);
        let mut shape = self.shape().to_vec();
        shape[a] = idx.len();
        let (idx, in_shape) = (idx.to_vec(), self.shape().to_vec());
        Tensor::from_op(out, shape, &self.device(), &[self], move |g| {
            let dx = backend::index_add(&g.storage(), outer, n, inner, &idx);
            vec![Some(Tensor::from_storage(dx, in_shape, g.device()))]
        })
    }
}
