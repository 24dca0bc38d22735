//! Resizing the last two axes of a tensor by bicubic interpolation, as PyTorch's
//! `F.interpolate(mode="bicubic", align_corners=False)`: what lets a ViT's learned position
//! grid follow the image size (DINO's small local crops).
//!
//! Interpolation is linear in the input, so a resize is two products with constant weight
//! matrices, `out = R_h · x · R_wᵀ`: the backward is the products' own, and every backend that
//! multiplies matrices resizes.

use crate::tensor::Tensor;

/// The cubic convolution kernel's coefficient (PyTorch's and OpenCV's).
const A: f64 = -0.75;

/// `(out × len)` weights of a 1-D bicubic resize from `len` to `out` samples: output `i` reads
/// the source at `(i + ½)·len/out − ½` from its four neighbours, indices clamped at the edges.
pub fn bicubic_weights(len: usize, out: usize) -> Vec<f64> {
    let cubic = |t: f64| {
        let t = t.abs();
        if t <= 1.0 {
            ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0
        } else if t < 2.0 {
            ((A * t - 5.0 * A) * t + 8.0 * A) * t - 4.0 * A
        } else {
            0.0
        }
    };
    let scale = len as f64 / out as f64;
    let mut w = vec![0.0; out * len];
    for i in 0..out {
        let src = (i as f64 + 0.5) * scale - 0.5;
        let x0 = src.floor();
        let t = src - x0;
        for k in -1..=2 {
            let j = (x0 as i64 + k).clamp(0, len as i64 - 1) as usize;
            w[i * len + j] += cubic(t - k as f64);
        }
    }
    w
}

impl Tensor {
    /// Resizes the last two axes `(…, H, W)` to `(…, h, w)` by bicubic interpolation.
    #[track_caller]
    pub fn resize_bicubic(&self, h: usize, w: usize) -> Tensor {
        let s = self.shape();
        assert!(
            self.rank() >= 2 && h > 0 && w > 0 && s[s.len() - 2] > 0 && s[s.len() - 1] > 0,
            "resize_bicubic: expected (…, H, W) with H, W > 0 and a size of at least 1×1, got {s:?} to {h}×{w}"
        );
        let (lead, (h0, w0)) = (&s[..s.len() - 2], (s[s.len() - 2], s[s.len() - 1]));
        if (h0, w0) == (h, w) {
            return self.clone();
        }
        let n: usize = lead.iter().product();
        let rw = self.new_from(&bicubic_weights(w0, w), &[w, w0]);
        let rh = self.new_from(&bicubic_weights(h0, h), &[h, h0]);
        // (N·H, W)·R_wᵀ → (N, H, w) → (N, w, H) → (N·w, H)·R_hᵀ → (N, w, h) → (N, h, w)
        let x = self.reshape_to(&[n * h0, w0]).matmul_nt(&rw);
        let x = x
            .reshape_to(&[n, h0, w])
            .transpose(1, 2)
            .reshape_to(&[n * w, h0]);
        let x = x.matmul_nt(&rh).reshape_to(&[n, w, h]).transpose(1, 2);
        let mut shape = lead.to_vec();
        shape.extend([h, w]);
        x.reshape_to(&shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each row sums to one (a constant stays constant) and an identity resize is the identity.
    #[test]
    fn weights_interpolate() {
        for (len, out) in [(7, 3), (7, 12), (4, 4), (1, 5), (5, 1)] {
            let w = bicubic_weights(len, out);
            for row in w.chunks(len) {
                assert!(
                    (row.iter().sum::<f64>() - 1.0).abs() < 1e-12,
                    "{len}→{out}: {row:?}"
                );
            }
        }
        let id = bicubic_weights(4, 4);
        for i in 0..4 {
            for j in 0..4 {
                assert!((id[i * 4 + j] - f64::from(u8::from(i == j))).abs() < 1e-12);
            }
        }
    }
}
