//! Gradient norms and clipping by global norm.

use crate::tensor::Tensor;

/// The global L2 norm of the gradients of `params` (those without a gradient count as zero).
///
/// The gradients' sums of squares are reduced on their device ([`Tensor::sum_squares`]) and read
/// back once, so a GPU model waits for one transfer, not one per tensor. All gradients must share
/// a device and dtype, as one model's do. NaN when the GPU failed on the way (`Device::check`
/// says how), which a caller that stops on a non-finite norm treats like any other.
pub fn grad_norm(params: &[Tensor]) -> f64 {
    grad_norm_squared(params).map_or(0.0, |sq| {
        sq.try_to_vec_f64().map_or(f64::NAN, |v| v[0].sqrt())
    })
}

/// The squared global norm of the gradients of `params` as a one-element tensor on their device,
/// not read back (a training step reads it together with the loss); `None` without gradients.
pub fn grad_norm_squared(params: &[Tensor]) -> Option<Tensor> {
    let grads: Vec<Tensor> = params.iter().filter_map(|p| p.grad()).collect();
    (!grads.is_empty()).then(|| crate::no_grad(|| Tensor::sum_squares(&grads).sum_all()))
}

/// Scales all gradients by `max_norm/(norm + 1e-6)` when their global L2 norm exceeds
/// `max_norm`, as PyTorch's `clip_grad_norm_`, and returns the norm before clipping (worth
/// logging: spikes show instability before the loss does). A non-finite norm leaves the
/// gradients alone and is returned for the caller to act on.
pub fn clip_grad_norm(params: &[Tensor], max_norm: f64) -> f64 {
    let norm = grad_norm(params);
    clip_grads(params, norm, max_norm);
    norm
}

/// [`clip_grad_norm`]'s scaling, for a caller that has measured the gradients' global `norm`.
pub fn clip_grads(params: &[Tensor], norm: f64, max_norm: f64) {
    if norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        crate::no_grad(|| {
            for g in params.iter().filter_map(|p| p.grad()) {
                g.set_data(&g.mul_scalar(scale));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Device;

    /// Parameters with gradients [3, 4] and [12] (global norm 13) and one without a gradient.
    fn params() -> Vec<Tensor> {
        let cpu = Device::cpu();
        let a = Tensor::zeros(&[2], &cpu).requires_grad_(true);
        let b = Tensor::zeros(&[1], &cpu).requires_grad_(true);
        let c = Tensor::zeros(&[3], &cpu).requires_grad_(true);
        (&a * &Tensor::from_vec(vec![3.0, 4.0], &[2], &cpu))
            .sum_all()
            .backward();
        (&b * 12.0).sum_all().backward();
        vec![a, b, c]
    }

    #[test]
    fn norm_over_all_gradients() {
        assert!((grad_norm(&params()) - 13.0).abs() < 1e-6);
        assert_eq!(grad_norm(&[Tensor::zeros(&[2], &Device::cpu())]), 0.0);
    }

    #[test]
    fn clips_to_max_norm_and_returns_the_norm_before() {
        let p = params();
        let norm = clip_grad_norm(&p, 6.5);
        assert!((norm - 13.0).abs() < 1e-6);
        let scale = 6.5 / (13.0 + 1e-6);
        let expect = [3.0 * scale, 4.0 * scale, 12.0 * scale];
        let got: Vec<f32> = p[..2]
            .iter()
            .flat_map(|t| t.grad().unwrap().to_vec())
            .collect();
        for (g, e) in got.iter().zip(expect) {
            assert!((*g as f64 - e).abs() < 1e-5, "{got:?}");
        }
        assert!((grad_norm(&p) - 6.5).abs() < 1e-5);
        assert!(p[2].grad().is_none());
    }

    #[test]
    fn leaves_small_gradients_alone() {
        let p = params();
        assert!((clip_grad_norm(&p, 20.0) - 13.0).abs() < 1e-6);
        assert_eq!(p[0].grad().unwrap().to_vec(), [3.0, 4.0]);
        assert_eq!(p[1].grad().unwrap().to_vec(), [12.0]);
    }
}
