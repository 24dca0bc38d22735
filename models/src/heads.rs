//! Projection and prediction heads: the small MLPs SSL objectives are computed on. Downstream
//! tasks use the representation *before* the head, which keeps information the objective discards.

use crate::vit::VisionTransformer;
use selfsup_engine::nn::{BatchNorm1d, Init, Linear, Module};
use selfsup_engine::Tensor;

/// An encoder f with its projector g: what a momentum teacher copies (BYOL's target network,
/// MoCo's key encoder).
pub struct Tower {
    pub encoder: VisionTransformer,
    pub projector: MlpHead,
}

impl Tower {
    /// z = g(f(x)): images `(B, C, H, W)` → `(B, D)`.
    pub fn forward(&self, images: &Tensor) -> Tensor {
        self.projector.forward(&self.encoder.features(images))
    }

    /// A frozen copy of this tower, for a teacher that then follows it by EMA.
    pub fn momentum_copy(&self) -> Tower {
        let mut scratch = Init::new(0, &self.encoder.pos_embed.device());
        let copy = Tower {
            encoder: VisionTransformer::new(&mut scratch, self.encoder.config.clone()),
            projector: MlpHead::new(&mut scratch, &self.projector.dims, self.projector.norm),
        };
        copy.copy_from(self);
        copy.set_frozen(true);
        copy
    }
}

impl Module for Tower {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("encoder".into(), &self.encoder),
            ("projector".into(), &self.projector),
        ]
    }
}

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
    /// Layer widths, input first (a copy of the same shape is built from them).
    pub dims: Vec<usize>,
    pub norm: HeadNorm,
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
        MlpHead {
            dims: dims.to_vec(),
            norm,
            fcs,
            bns,
        }
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
