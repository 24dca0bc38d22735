//! Frozen features of a dataset, on the host.

use super::Encoder;
use selfsup_engine::data::Dataset;
use selfsup_engine::{no_grad, Device, Tensor};

/// `n` feature vectors of size `dim` with their labels.
#[derive(Clone, Debug)]
pub struct Features {
    pub x: Vec<f32>,
    pub y: Vec<u32>,
    pub n: usize,
    pub dim: usize,
}

impl Features {
    pub fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.dim..(i + 1) * self.dim]
    }

    /// Effective rank of the features: exp of the entropy of the normalised singular-value
    /// spectrum (Roy & Vetterli). A collapsed representation has a rank near 1.
    pub fn effective_rank(&self) -> f64 {
        let d = self.dim;
        let mean: Vec<f64> = (0..d)
            .map(|j| (0..self.n).map(|i| self.x[i * d + j] as f64).sum::<f64>() / self.n as f64)
            .collect();
        let mut cov = vec![0.0f64; d * d];
        for i in 0..self.n {
            let r = self.row(i);
            for a in 0..d {
                let va = r[a] as f64 - mean[a];
                for b in a..d {
                    cov[a * d + b] += va * (r[b] as f64 - mean[b]);
                }
            }
        }
        for a in 0..d {
            for b in 0..a {
                cov[a * d + b] = cov[b * d + a];
            }
        }
        // Singular values of the centred features are the square roots of the covariance's
        // eigenvalues.
        let sv: Vec<f64> = symmetric_eigenvalues(&mut cov, d)
            .into_iter()
            .map(|e| e.max(0.0).sqrt())
            .collect();
        let total: f64 = sv.iter().sum();
        if total == 0.0 {
            return 0.0;
        }
        let entropy: f64 = sv
            .iter()
            .map(|s| s / total)
            .filter(|&p| p > 0.0)
            .map(|p| -p * p.ln())
            .sum();
        entropy.exp()
    }
}

/// Eigenvalues of a symmetric matrix by cyclic Jacobi rotations (d is small: a feature width).
fn symmetric_eigenvalues(a: &mut [f64], d: usize) -> Vec<f64> {
    for _sweep in 0..50 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * d + j].powi(2))
            .sum();
        if off < 1e-20 {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let (c, s) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
                for k in 0..d {
                    let (akp, akq) = (a[k * d + p], a[k * d + q]);
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let (apk, aqk) = (a[p * d + k], a[q * d + k]);
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
            }
        }
    }
    (0..d).map(|i| a[i * d + i]).collect()
}

/// The encoder's representation of every image, computed in batches without a graph.
pub fn extract_features(
    encoder: &dyn Encoder,
    data: &Dataset,
    batch: usize,
    device: &Device,
) -> Features {
    let len = data.image_len();
    let mut x = Vec::with_capacity(data.n * encoder.dim());
    no_grad(|| {
        for start in (0..data.n).step_by(batch.max(1)) {
            let b = batch.min(data.n - start);
            let imgs = Tensor::from_vec(
                data.images[start * len..(start + b) * len].to_vec(),
                &[b, data.c, data.h, data.w],
                device,
            );
            x.extend(encoder.features(&imgs).to_vec());
        }
    });
    Features {
        x,
        y: data.labels.clone(),
        n: data.n,
        dim: encoder.dim(),
    }
}

/// The pixels themselves as features: the baseline any representation should beat.
pub fn raw_pixels(data: &Dataset) -> Features {
    Features {
        x: data.images.clone(),
        y: data.labels.clone(),
        n: data.n,
        dim: data.image_len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_rank_counts_independent_directions() {
        // Points spread equally along 3 orthogonal axes of a 6-d space: rank 3.
        let mut x = Vec::new();
        for i in 0..300 {
            let mut r = vec![0.0f32; 6];
            r[i % 3] = if i % 2 == 0 { 1.0 } else { -1.0 };
            x.extend(r);
        }
        let f = Features {
            x,
            y: vec![0; 300],
            n: 300,
            dim: 6,
        };
        assert!(
            (f.effective_rank() - 3.0).abs() < 1e-6,
            "{}",
            f.effective_rank()
        );
        let collapsed = Features {
            x: vec![1.0; 60],
            y: vec![0; 10],
            n: 10,
            dim: 6,
        };
        assert_eq!(collapsed.effective_rank(), 0.0);
    }
}
