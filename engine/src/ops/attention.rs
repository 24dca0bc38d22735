//! Scaled dot-product attention: fused kernels forward and backward, composed from primitive
//! ops (and differentiated by autograd) for the shapes a backend's kernels do not take; and
//! multi-head self-attention read straight from a packed qkv projection.

use crate::autocast::operand;
use crate::backend::{self, AttnSaved, AttnSpec, Packing};
use crate::tensor::Tensor;

/// The additive key mask the kernels take: -inf where `mask` (`(B, Tk)`, non-zero = padded) hides
/// a key, 0 elsewhere, in `like`'s dtype and device.
#[track_caller]
fn key_bias(op: &str, mask: &Tensor, like: &Tensor, shape: [usize; 2]) -> Tensor {
    assert_eq!(
        mask.shape(),
        shape,
        "{op}: key_padding_mask must be (B, Tk) = {shape:?}, got {:?}",
        mask.shape()
    );
    like.new_from(&[f64::NEG_INFINITY], &[])
        .where_(mask, &like.new_from(&[0.0], &[]))
        .detach()
}

/// softmax(q kᵀ · scale + masks) v from primitive tensor ops, for the shapes the fused kernels do
/// not take (on a GPU: head dimensions past 128 or not multiples of 4, sequences past its loop
/// limit). The same outputs, zeros for a query that sees no key (a softmax row of only -inf is
/// zeros on every backend); its gradient is autograd's.
fn composed(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    causal: bool,
    scale: f64,
) -> Tensor {
    let r = q.rank();
    let (tq, tk) = (q.shape()[r - 2], k.shape()[r - 2]);
    // (…, Tq, Tk)
    let mut s = q.matmul_nt(k).mul_scalar(scale);
    if let Some(bias) = bias {
        // (B, Tk) → (B, [1,] 1, Tk): the same keys hidden for every head and query.
        let mut shape = vec![bias.shape()[0]; r - 1];
        shape[1..].fill(1);
        shape.push(tk);
        s = &s + &bias.reshape_to(&shape);
    }
    if causal {
        // -inf where key j comes after query i, made on the device from two index vectors.
        let device = q.device();
        let later = Tensor::arange(tk, &device)
            .reshape_to(&[1, tk])
            .gt(&Tensor::arange(tq, &device).reshape_to(&[tq, 1]));
        let hidden = q.new_from(&[f64::NEG_INFINITY], &[]);
        s = &s + &hidden.where_(&later, &q.new_from(&[0.0], &[]));
    }
    s.softmax(-1).matmul(v)
}

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
        let bias = key_padding_mask.map(|m| key_bias("attention", m, q, [b, tk]));
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
        if !backend::attention_fits(&q.storage(), &spec) {
            return composed(q, k, v, bias.as_ref(), causal, scale);
        }
        // Under autocast the fused kernels read f16.
        let (q, k, v) = &(operand(q), operand(k), operand(v));
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
            let (qst, kst, vst) = (qs.storage(), ks.storage(), vs.storage());
            let bias_st = bias.as_ref().map(|t| t.storage());
            let saved = AttnSaved {
                inputs: &[&qst, &kst, &vst],
                out: &os.storage(),
                lse: &lse.storage(),
                bias: bias_st.as_deref(),
            };
            backend::attention_backward(&saved, &g.storage(), spec, Packing::Separate)
                .into_iter()
                .zip([&qs, &ks, &vs])
                .map(|(d, x)| Some(Tensor::from_storage(d, x.shape().to_vec(), x.device())))
                .collect()
        })
    }

    /// Multi-head self-attention on a packed projection `qkv` `(B, T, 3·C)` holding `[q | k | v]`
    /// (each `(T, heads, C/heads)` per batch element, as one fused qkv linear writes them): the
    /// heads' outputs concatenated, `(B, T, C)`. The same as splitting, permuting to
    /// `(B, heads, T, C/heads)`, [`Tensor::scaled_dot_product_attention`] and merging back, but
    /// where the backend reads heads in place none of those copies are made.
    #[track_caller]
    pub fn multi_head_attention(
        qkv: &Tensor,
        heads: usize,
        causal: bool,
        key_padding_mask: Option<&Tensor>,
    ) -> Tensor {
        let s = qkv.shape().to_vec();
        assert!(
            qkv.rank() == 3 && heads > 0 && s[2].is_multiple_of(3 * heads),
            "multi_head_attention: qkv must be (B, T, 3·C) with C divisible by {heads} heads, got {s:?}"
        );
        let (b, t, c) = (s[0], s[1], s[2] / 3);
        let d = c / heads;
        let split = || {
            let x = qkv.reshape_to(&[b, t, 3, heads, d]);
            let head = |i: usize| {
                x.narrow(2, i, 1)
                    .reshape_to(&[b, t, heads, d])
                    .permute(&[0, 2, 1, 3])
            };
            let y = Tensor::scaled_dot_product_attention(
                &head(0),
                &head(1),
                &head(2),
                causal,
                key_padding_mask,
                None,
            );
            y.permute(&[0, 2, 1, 3]).reshape_to(&[b, t, c])
        };
        let bias = key_padding_mask.map(|m| key_bias("multi_head_attention", m, qkv, [b, t]));
        let spec = AttnSpec {
            bh: b * heads,
            heads,
            tq: t,
            tk: t,
            d,
            dv: d,
            scale: 1.0 / (d as f64).sqrt(),
            causal,
        };
        let qkv = &if backend::attention_fits(&qkv.storage(), &spec) {
            operand(qkv)
        } else {
            qkv.clone()
        };
        let bias_storage = bias.as_ref().map(|t| t.storage());
        let Some((o, lse)) =
            backend::attention_packed(&qkv.storage(), bias_storage.as_deref(), spec)
        else {
            return split();
        };
        let o = Tensor::from_storage(o, vec![b, t, c], qkv.device());
        let lse = Tensor::from_storage(lse, vec![b * heads, t], qkv.device());
        let (xs, os) = (qkv.detach(), o.detach());
        Tensor::from_op(
            o.storage(),
            vec![b, t, c],
            &qkv.device(),
            &[qkv],
            move |g| {
                let (xst, bias_st) = (xs.storage(), bias.as_ref().map(|t| t.storage()));
                let saved = AttnSaved {
                    inputs: &[&xst],
                    out: &os.storage(),
                    lse: &lse.storage(),
                    bias: bias_st.as_deref(),
                };
                let d = backend::attention_backward(&saved, &g.storage(), spec, Packing::Qkv)
                    .pop()
                    .expect("packed attention has one gradient");
                vec![Some(Tensor::from_storage(
                    d,
                    xs.shape().to_vec(),
                    xs.device(),
                ))]
            },
        )
    }
}
