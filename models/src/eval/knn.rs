//! k-nearest-neighbour classification on frozen features (Wu et al., 2018; DINO's protocol):
//! cosine similarity, the k most similar training points vote with weight exp(sim / τ).

use super::Features;
use selfsup_engine::{Device, Tensor};

/// Accuracy (0–1) of the weighted kNN vote of `train` on `test`.
#[track_caller]
pub fn knn_accuracy(
    train: &Features,
    test: &Features,
    k: usize,
    temperature: f64,
    classes: usize,
) -> f64 {
    assert_eq!(
        train.dim, test.dim,
        "knn: train features have {} dims, test {}",
        train.dim, test.dim
    );
    let cpu = Device::cpu();
    let a = Tensor::from_vec(train.x.clone(), &[train.n, train.dim], &cpu).normalize(1, 1e-12);
    let b = Tensor::from_vec(test.x.clone(), &[test.n, test.dim], &cpu).normalize(1, 1e-12);
    let sims = b.matmul_nt(&a).to_vec();
    let k = k.min(train.n);
    let mut correct = 0;
    for i in 0..test.n {
        let row = &sims[i * train.n..(i + 1) * train.n];
        let mut idx: Vec<usize> = (0..train.n).collect();
        idx.select_nth_unstable_by(k - 1, |&x, &y| row[y].total_cmp(&row[x]));
        let mut votes = vec![0.0f64; classes];
        for &j in &idx[..k] {
            votes[train.y[j] as usize] += (row[j] as f64 / temperature).exp();
        }
        let pred = (0..classes)
            .max_by(|&x, &y| votes[x].total_cmp(&votes[y]))
            .unwrap_or(0);
        correct += (pred == test.y[i] as usize) as usize;
    }
    correct as f64 / test.n.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_clusters_are_classified_perfectly() {
        let point = |c: u32, j: usize| {
            let mut v = vec![0.01 * j as f32; 4];
            v[c as usize] += 1.0;
            v
        };
        let train = Features {
            x: (0..40).flat_map(|i| point(i % 4, i as usize)).collect(),
            y: (0..40).map(|i| i % 4).collect(),
            n: 40,
            dim: 4,
        };
        let test = Features {
            x: (0..8).flat_map(|i| point(i % 4, 3)).collect(),
            y: (0..8).map(|i| i % 4).collect(),
            n: 8,
            dim: 4,
        };
        assert_eq!(knn_accuracy(&train, &test, 5, 0.07, 4), 1.0);
        let mut wrong = test.clone();
        wrong.y = wrong.y.iter().map(|y| (y + 1) % 4).collect();
        assert_eq!(knn_accuracy(&train, &wrong, 5, 0.07, 4), 0.0);
    }
}
