//! Projection and prediction heads: the small MLPs SSL objectives are computed on. Downstream
//! tasks use the representation *before* the head, which keeps information the objective discards.

use selfsup_engine::nn::{BatchNorm1d, Init, Linear, Module};
use selfsup_engine::Tensor;

/// Whether and where a head normalises with batch statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadNorm {
    /// BatchNorm after every hidden Linear (SimCLR, BYOL, Barlow Twins).
    Hidden,
    /// As `Hidden`, plus a non-affine BatchNorm on the output (SimSiam and MoCo v3 projectors).
    HiddenAndOutput,
}

/// An MLP `dims[0] → dims[1] → … → dims[last]`: each hidden layer is Linear (→ BatchNorm) → ReLU.
/// Layers are named `fc1`, `bn1`, `fc2`, … as in the reference implementations.
pub struct MlpHead {
    pub fcs: Vec<Linear>,
    /// The norm after each Linear, if any (the last one only with `HiddenAndOutput`).
    pub bns: Vec<Option<BatchNorm1d>>,
}

impl MlpHead {
    #[track_caller]
    pub fn new(init: &mut Init, dims: &[usize], norm: HeadNorm) -> MlpHead {
        assert!(dims.len() >= 2, "MlpHead: needs input and output sizes");
        let layers = dims.len() - 1;
        let (mut fcs, mut bns) = (Vec::new(), Vec::new());
        for (i, pair) in dims.windows(2).enumerate() {
            let last = i + 1 == layers;
            let bn = match norm {
                HeadNorm::Hidden => !last,
                HeadNorm::HiddenAndOutput => true,
            };
            // A bias before BatchNorm is cancelled by its mean subtraction.
            fcs.push(Linear::new(init, pair[0], pair[1], !bn));
            bns.push(bn.then(|| BatchNorm1d::new(init, pair[1], !last)));
        }
        MlpHead { fcs, bns }
    }

    /// `(N, dims[0])` → `(N, dims[last])`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = x.clone();
        for (i, (fc, bn)) in self.fcs.iter().zip(&self.bns).enumerate() {
            h = fc.forward(&h);
            if let Some(bn) = bn {
                h = bn.forward(&h);
            }
            if i + 1 < self.fcs.len() {
                h = h.relu();
            }
        }
        h
    }
}

impl Module for MlpHead {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        let mut v: Vec<(String, &dyn Module)> = Vec::new();
        for (i, (fc, bn)) in self.fcs.iter().zip(&self.bns).enumerate() {
            v.push((format!("fc{}", i + 1), fc));
            if let Some(bn) = bn {
                v.push((format!("bn{}", i + 1), bn));
            }
        }
        v
    }
}
