//! 2-D convolution over channel-last maps as im2col + one matrix product: the window gather is
//! `index_select` (its backward a deterministic scatter-add) and the product is `linear`, so the
//! layer's gradients are those of two checked ops, on either backend.

use super::{Init, Linear, Module};
use crate::tensor::Tensor;

/// The convolution of `x` `(B, H, W, C)` with `weight` `(out, k·k·C)` — each filter's taps ordered
/// (row, column, channel) — at `stride`, zero-padded by `padding` on every side: `(B, OH, OW, out)`
/// with `OH = (H + 2·padding − k) / stride + 1`.
#[track_caller]
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Tensor {
    let s = x.shape();
    assert!(
        x.rank() == 4 && kernel > 0 && stride > 0,
        "conv2d: input must be (B, H, W, C) with kernel and stride ≥ 1, got {s:?}"
    );
    let (b, h, w, c) = (s[0], s[1], s[2], s[3]);
    assert!(
        h + 2 * padding >= kernel && w + 2 * padding >= kernel,
        "conv2d: a {kernel}×{kernel} kernel does not fit a {h}×{w} map padded by {padding}"
    );
    assert_eq!(
        weight.shape().get(1).copied(),
        Some(kernel * kernel * c),
        "conv2d: weight {:?} does not match a {kernel}×{kernel} kernel over {c} channels",
        weight.shape()
    );
    let (oh, ow) = (
        (h + 2 * padding - kernel) / stride + 1,
        (w + 2 * padding - kernel) / stride + 1,
    );
    // (B, H·W, C), plus one zero row at index H·W that every padding tap reads.
    let flat = x.reshape_to(&[b, h * w, c]);
    let padded = Tensor::cat(&[&flat, &flat.full_shaped(&[b, 1, c], 0.0)], 1);
    let zero = (h * w) as u32;
    let mut rows = Vec::with_capacity(oh * ow * kernel * kernel);
    for (oy, ox) in (0..oh).flat_map(|y| (0..ow).map(move |x| (y, x))) {
        for (ky, kx) in (0..kernel).flat_map(|y| (0..kernel).map(move |x| (y, x))) {
            let (iy, ix) = (oy * stride + ky, ox * stride + kx);
            let inside =
                (padding..h + padding).contains(&iy) && (padding..w + padding).contains(&ix);
            rows.push(if inside {
                ((iy - padding) * w + ix - padding) as u32
            } else {
                zero
            });
        }
    }
    // (B, OH·OW·k·k, C) → (B, OH, OW, k·k·C): each output position's window, flattened.
    let cols = padded
        .index_select(1, &rows)
        .reshape_to(&[b, oh, ow, kernel * kernel * c]);
    cols.linear(weight, bias)
}

/// A convolution layer over channel-last maps (see [`conv2d`]).
pub struct Conv2d {
    pub proj: Linear,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Conv2d {
    /// PyTorch's default initialisation for convolutions, U(±1/√(k·k·in)).
    pub fn new(
        init: &mut Init,
        inputs: usize,
        outputs: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Conv2d {
        Conv2d {
            proj: Linear::new_uniform(init, kernel * kernel * inputs, outputs, true),
            kernel,
            stride,
            padding,
        }
    }

    /// `(B, H, W, in)` → `(B, OH, OW, out)`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let p = &self.proj;
        conv2d(
            x,
            &p.weight,
            p.bias.as_ref(),
            self.kernel,
            self.stride,
            self.padding,
        )
    }
}

impl Module for Conv2d {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("proj".into(), &self.proj)]
    }
}
