//! Shape arithmetic: element counts, strides, axis normalisation and NumPy broadcasting.

/// Number of elements of a shape (1 for a scalar).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major (C-contiguous) strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Resolves a possibly negative axis against `rank`, panicking with the op's name if out of range.
#[track_caller]
pub fn axis(op: &str, axis: isize, rank: usize) -> usize {
    let r = rank as isize;
    if axis < -r || axis >= r.max(1) || (rank == 0 && axis != 0 && axis != -1) {
        panic!("{op}: axis {axis} is out of range for a tensor of rank {rank}");
    }
    if axis < 0 {
        (axis + r) as usize
    } else {
        axis as usize
    }
}

/// The broadcast of two shapes under NumPy rules, or a panic naming the op and both shapes.
#[track_caller]
pub fn broadcast(op: &str, a: &[usize], b: &[usize]) -> Vec<usize> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => panic!("{op}: shapes {a:?} and {b:?} cannot be broadcast together"),
        };
    }
    out
}

/// Strides that read a tensor of shape `from` as if it had the (broadcast) shape `to`:
/// broadcast dimensions get stride 0.
pub fn broadcast_strides(from: &[usize], to: &[usize]) -> Vec<usize> {
    let st = strides(from);
    let off = to.len() - from.len();
    (0..to.len())
        .map(|i| {
            if i < off || from[i - off] == 1 {
                0
            } else {
                st[i - off]
            }
        })
        .collect()
}

/// Splits `shape` around `axis` into (outer, size, inner) extents for axis-wise kernels.
pub fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        numel(&shape[..axis]),
        shape[axis],
        numel(&shape[axis + 1..]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast("t", &[3, 1, 5], &[4, 1]), vec![3, 4, 5]);
        assert_eq!(broadcast("t", &[], &[2, 3]), vec![2, 3]);
        assert_eq!(broadcast_strides(&[4, 1], &[3, 4, 5]), vec![0, 1, 0]);
    }

    #[test]
    #[should_panic(expected = "add: shapes [2, 3] and [4] cannot be broadcast together")]
    fn incompatible_shapes_name_the_op() {
        broadcast("add", &[2, 3], &[4]);
    }

    #[test]
    #[should_panic(expected = "sum: axis 2 is out of range for a tensor of rank 2")]
    fn bad_axis_names_the_op() {
        axis("sum", 2, 2);
    }
}
