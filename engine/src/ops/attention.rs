//! Scaled dot-product attention: one fused kernel forward, composed ops backward.

use crate::backend::{self, AttnSpec};
use crate::tensor::Tensor;

impl Tensor {
    /// softmax(q kᵀ · scale + masks) v for q `(B, H, Tq, D)`, k `(B, H, Tk, D)`, v `(B, H, Tk, Dv)`
    /// (or rank-3 `(B, T, D)` with one head).
    ///
    /// `causal` hides key j from query i when j > i. `key_padding_mask`, shaped `(B, Tk)`, hides the
    /// keys where it is non-zero (PyTorch's `key_padding_mask` convention); a query that can see no
    /// key gets a zero output. `scale` defaults to 1/√D.
    #[track_caller]
    pub fn scaled_dot_product_attention(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        causal: bool,
        key_padding_mask: Option<&Tensor>,
        scale: Option<f64>,
    ) -> Tensor {
        let r = q.rank();
        assert!(
            (r == 3 || r == 4) && k.rank() == r && v.rank() == r,
            "attention: q, k, v must all be (B, H, T, D) or (B, T, D), got {:?}, {:?}, {:?}",
            q.shape(),
            k.shape(),
            v.shape()
        );
        for t in [k, v] {
            crate::ops::elementwise::check_same("attention", q, t);
        }
        let (b, heads) = (q.shape()[0], if r == 4 { q.shape()[1] } else { 1 });
        let (tq, d) = (q.shape()[r - 2], q.shape()[r - 1]);
        let (tk, dv) = (k.shape()[r - 2], v.shape()[r - 1]);
        assert!(
            k.shape()[..r - 2] == q.shape()[..r - 2]
                && v.shape()[..r - 1] == k.shape()[..r - 1]
                && k.shape()[r - 1] == d,
            "attention: shapes q {:?}, k {:?}, v {:?} do not agree",
            q.shape(),
            k.shape(),
            v.shape()
        );
        let bias = key_padding_mask.map(|m| {
            assert_eq!(
                m.shape(),
                [b, tk],
                "attention: key_padding_mask must be (B, Tk) = {:?}, got {:?}",
                [b, tk],
                m.shape()
            );
            q.new_from(&[f64::NEG_INFINITY], &[])
                .where_(m, &q.new_from(&[0.0], &[]))
                .detach()
        });
        let scale = scale.unwrap_or(1.0 / (d as f64).sqrt());
        let spec = AttnSpec {
            bh: b * heads,
            heads,
            tq,
            tk,
            d,
            dv,
            scale,
            causal,
        };
        let bias_storage = bias.as_ref().map(|t| t.storage());
        let (o, lse) = backend::attention(
            &q.storage(),
            &k.storage(),
            &v.storage(),
            bias_storage.as_deref(),
            spec,
        );
        let mut out_shape = q.shape().to_vec();
        out_shape[r - 1] = dv;
        let o = Tensor::from_storage(o, out_shape.clone(), q.device());
        let mut lse_shape = q.shape()[..r - 1].to_vec();
        lse_shape.push(1);
        let lse = Tensor::from_storage(lse, lse_shape, q.device());
        let (qs, ks, vs, os) = (q.detach(), k.detach(), v.detach(), o.detach());
        Tensor::from_op(o.storage(), out_shape, &q.device(), &[q, k, v], move |g| {
            // Rebuild the probabilities from the saved log-sum-exp, then the usual chain rule.
            let mut s = qs.matmul_nt(&ks).mul_scalar(scale);
            if let Some(bias) = &bias {
                let mut bs = vec![b, 1, tk];
                if r == 4 {
                    bs.insert(1, 1);
                }
                s = &s + &bias.reshape_to(&bs);
            }
            if causal {
                let mask: Vec<f64> = (0..tq * tk)
                    .map(|i| {
                        if i % tk > i / tk {
                            f64::NEG_INFINITY
                        } else {
                            0.0
                        }
                    })
                    .collect();
                s = &s + &qs.new_from(&mask, &[tq, tk]);
            }
            let p = (&s - &lse).exp();
            let dv = p.matmul_tn(g);
            let dp = g.matmul_nt(&vs);
            let delta = (g * &os).sum(-1, true);
            let ds = &p * &(&dp - &delta);
            let dq = ds.matmul(&ks).mul_scalar(scale);
            let dk = ds.matmul_tn(&qs).mul_scalar(scale);
            vec![Some(dq), Some(dk), Some(dv)]
        })
    }
}
