//! BART's five ways to corrupt a document (Lewis et al., 2020, §2.2), each on token ids: the
//! model learns to reconstruct the original from the corrupted text.

use rand::seq::SliceRandom;
use rand::Rng;
use selfsup_engine::SeededRng;
use serde::{Deserialize, Serialize};

/// Which corruption a run trains on, as `--noise` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Noise {
    TokenMasking,
    TokenDeletion,
    TextInfilling,
    SentencePermutation,
    DocumentRotation,
}

impl Noise {
    /// The corrupted form of a document given as its `sentences`: masking, deletion and
    /// infilling act on `ratio` of the tokens (infilling with Poisson(3) spans, the paper's).
    pub fn apply(
        self,
        sentences: &[Vec<u32>],
        ratio: f64,
        mask: u32,
        rng: &mut SeededRng,
    ) -> Vec<u32> {
        let doc = sentences.concat();
        match self {
            Noise::TokenMasking => token_masking(&doc, ratio, mask, rng),
            Noise::TokenDeletion => token_deletion(&doc, ratio, rng),
            Noise::TextInfilling => text_infilling(&doc, ratio, 3.0, mask, rng),
            Noise::SentencePermutation => sentence_permutation(sentences, rng),
            Noise::DocumentRotation => document_rotation(&doc, rng),
        }
    }
}

/// Each token becomes `mask` with probability `p`.
pub fn token_masking(ids: &[u32], p: f64, mask: u32, rng: &mut SeededRng) -> Vec<u32> {
    ids.iter()
        .map(|&t| if rng.random::<f64>() < p { mask } else { t })
        .collect()
}

/// Each token is dropped with probability `p` (the model must find where input is missing).
pub fn token_deletion(ids: &[u32], p: f64, rng: &mut SeededRng) -> Vec<u32> {
    ids.iter()
        .copied()
        .filter(|_| rng.random::<f64>() >= p)
        .collect()
}

/// A draw from Poisson(λ) by Knuth's product of uniforms (λ is small here).
pub fn poisson(lambda: f64, rng: &mut SeededRng) -> usize {
    let limit = (-lambda).exp();
    let (mut k, mut p) = (0, 1.0);
    loop {
        p *= rng.random::<f64>();
        if p <= limit {
            return k;
        }
        k += 1;
    }
}

/// Text infilling: spans with Poisson(`lambda`) lengths, at random starts, are each replaced by
/// one `mask` until about `ratio` of the tokens are covered; a 0-length span inserts a `mask`
/// (the model must also learn how many tokens a mask hides, possibly none).
pub fn text_infilling(
    ids: &[u32],
    ratio: f64,
    lambda: f64,
    mask: u32,
    rng: &mut SeededRng,
) -> Vec<u32> {
    let n = ids.len();
    let target = (n as f64 * ratio).round() as usize;
    // hidden[i]: token i is inside a span; starts[i]: a mask goes before token i (i == n: at the end).
    let (mut hidden, mut starts) = (vec![false; n], vec![false; n + 1]);
    let (mut covered, mut tries) = (0, 0);
    while covered < target && tries < 10 * n + 10 {
        tries += 1;
        let len = poisson(lambda, rng).min(target - covered);
        let start = rng.random_range(0..=n - len.min(n));
        // A span (or an insertion) may not start inside or at the start of another.
        if starts[start] || hidden.get(start).copied().unwrap_or(false) {
            continue;
        }
        if (start..start + len).any(|i| hidden[i]) {
            continue;
        }
        starts[start] = true;
        hidden[start..start + len]
            .iter_mut()
            .for_each(|h| *h = true);
        covered += len;
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..=n {
        if starts[i] {
            out.push(mask);
        }
        if i < n && !hidden[i] {
            out.push(ids[i]);
        }
    }
    out
}

/// The sentences in a random order, concatenated.
pub fn sentence_permutation(sentences: &[Vec<u32>], rng: &mut SeededRng) -> Vec<u32> {
    let mut order: Vec<usize> = (0..sentences.len()).collect();
    order.shuffle(rng);
    order
        .iter()
        .flat_map(|&i| sentences[i].iter().copied())
        .collect()
}

/// The document rotated to begin at a random token (the model must find the true start).
pub fn document_rotation(ids: &[u32], rng: &mut SeededRng) -> Vec<u32> {
    if ids.is_empty() {
        return Vec::new();
    }
    let k = rng.random_range(0..ids.len());
    [&ids[k..], &ids[..k]].concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const MASK: u32 = 9999;

    fn doc(n: u32) -> Vec<u32> {
        (0..n).collect()
    }

    #[test]
    fn token_masking_masks_the_given_share_in_place() {
        let mut rng = SeededRng::seed_from_u64(1);
        let out = token_masking(&doc(20_000), 0.3, MASK, &mut rng);
        assert_eq!(out.len(), 20_000);
        let masked = out.iter().filter(|&&t| t == MASK).count() as f64 / 20_000.0;
        assert!((masked - 0.3).abs() < 0.015, "{masked}");
        assert!(out
            .iter()
            .enumerate()
            .all(|(i, &t)| t == MASK || t == i as u32));
    }

    #[test]
    fn token_deletion_keeps_order_and_drops_the_given_share() {
        let mut rng = SeededRng::seed_from_u64(2);
        let out = token_deletion(&doc(20_000), 0.2, &mut rng);
        let kept = out.len() as f64 / 20_000.0;
        assert!((kept - 0.8).abs() < 0.015, "{kept}");
        assert!(out.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn poisson_has_the_mean_and_variance_of_lambda() {
        let mut rng = SeededRng::seed_from_u64(3);
        let x: Vec<f64> = (0..50_000).map(|_| poisson(3.0, &mut rng) as f64).collect();
        let mean = x.iter().sum::<f64>() / x.len() as f64;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / x.len() as f64;
        assert!(
            (mean - 3.0).abs() < 0.05 && (var - 3.0).abs() < 0.1,
            "{mean} {var}"
        );
        // P(0) = e^-3 ≈ 0.0498: the zero-length spans exist.
        let zeros = x.iter().filter(|&&v| v == 0.0).count() as f64 / x.len() as f64;
        assert!((zeros - (-3.0f64).exp()).abs() < 0.005, "{zeros}");
    }

    #[test]
    fn text_infilling_hides_spans_behind_single_masks() {
        let mut rng = SeededRng::seed_from_u64(4);
        let ids = doc(2000);
        let out = text_infilling(&ids, 0.3, 3.0, MASK, &mut rng);
        let kept: Vec<u32> = out.iter().copied().filter(|&t| t != MASK).collect();
        // The kept tokens are the original in order, about 70 % of it.
        assert!(kept.windows(2).all(|w| w[0] < w[1]));
        let hidden = 2000 - kept.len();
        assert!((hidden as f64 / 2000.0 - 0.3).abs() < 0.02, "{hidden}");
        // Fewer masks than hidden tokens: a span of several tokens is one mask.
        let masks = out.len() - kept.len();
        assert!(
            masks > 0 && masks * 2 < hidden,
            "{masks} masks for {hidden} tokens"
        );
        // No two masks in a row unless a zero-length span sits next to a span.
        assert!(
            out.windows(2)
                .filter(|w| w[0] == MASK && w[1] == MASK)
                .count()
                < masks / 4
        );
    }

    #[test]
    fn text_infilling_can_insert_a_mask_that_hides_nothing() {
        // With λ tiny, most spans have length 0: masks are inserted, nothing is hidden.
        let mut rng = SeededRng::seed_from_u64(5);
        let ids = doc(50);
        let inserted = (0..200)
            .map(|_| text_infilling(&ids, 0.1, 0.05, MASK, &mut rng))
            .filter(|out| out.len() > ids.len())
            .count();
        assert!(inserted > 0, "no zero-length span was inserted");
    }

    #[test]
    fn permutation_is_a_permutation_of_sentences_and_rotation_a_rotation() {
        let mut rng = SeededRng::seed_from_u64(6);
        let sentences: Vec<Vec<u32>> = (0..6).map(|s| (10 * s..10 * s + 4).collect()).collect();
        let out = sentence_permutation(&sentences, &mut rng);
        let mut sorted = out.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, sentences.concat());
        // Sentences stay whole.
        for chunk in out.chunks(4) {
            assert!(chunk.windows(2).all(|w| w[1] == w[0] + 1), "{out:?}");
        }
        let ids = doc(10);
        let r = document_rotation(&ids, &mut rng);
        let k = r[0] as usize;
        assert_eq!(r, [&ids[k..], &ids[..k]].concat());
    }
}
