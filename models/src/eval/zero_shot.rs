//! What CLIP's two towers do together: classify images from class prompts alone (zero-shot,
//! with templates training never saw) and retrieve captions for images and images for captions.

use crate::captions::Split;
use crate::clip::Clip;
use rand::SeedableRng;
use selfsup_engine::data::Dataset;
use selfsup_engine::{no_grad, Device, SeededRng, Tensor};
use std::collections::HashMap;

/// Zero-shot accuracy and retrieval recall on held-out images, all in [0, 1].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ZeroShot {
    pub accuracy: f64,
    /// Image → caption recall at 1 and 5, among the distinct held-out captions.
    pub image_to_text: [f64; 2],
    /// Caption → image recall at 1 and 5, among the held-out images.
    pub text_to_image: [f64; 2],
    /// Image–caption pairs retrieval ran over.
    pub pairs: usize,
    /// Distinct captions among them (the image → text candidates).
    pub captions: usize,
}

/// Row `i` of `(n, dim)` values scaled to unit length.
fn normalise_rows(x: &mut [f32], dim: usize) {
    for row in x.chunks_mut(dim) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= norm);
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// For each row of `queries` (`(n, dim)`), the index of the most similar row of `keys` by dot
/// product (cosine when both are normalised).
pub fn nearest(queries: &[f32], keys: &[f32], dim: usize) -> Vec<usize> {
    queries
        .chunks(dim)
        .map(|q| {
            keys.chunks(dim)
                .map(|k| dot(q, k))
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (j, s)| {
                    if s > best.1 {
                        (j, s)
                    } else {
                        best
                    }
                })
                .0
        })
        .collect()
}

/// Unit-length embeddings of the first `n` images of `data`, `(n, E)`.
fn image_embeddings(clip: &Clip, data: &Dataset, n: usize, device: &Device) -> Vec<f32> {
    let len = data.image_len();
    let mut x = Vec::new();
    no_grad(|| {
        for start in (0..n).step_by(256) {
            let b = 256.min(n - start);
            let images = Tensor::from_vec(
                data.images[start * len..(start + b) * len].to_vec(),
                &[b, data.c, data.h, data.w],
                device,
            );
            x.extend(clip.embed_images(&images).to_vec());
        }
    });
    normalise_rows(&mut x, clip.config.embed_dim);
    x
}

/// Unit-length embeddings of `texts`, `(n, E)`.
fn text_embeddings(clip: &Clip, texts: &[String]) -> Vec<f32> {
    let mut x = Vec::new();
    no_grad(|| {
        for chunk in texts.chunks(256) {
            x.extend(clip.embed_texts(chunk).to_vec());
        }
    });
    normalise_rows(&mut x, clip.config.embed_dim);
    x
}

/// Each class's embedding as CLIP's prompt ensemble makes it: the mean of its prompts' unit
/// embeddings, normalised again. `(classes, E)`.
pub fn class_embeddings(clip: &Clip) -> Vec<f32> {
    let e = clip.config.embed_dim;
    let mut out = Vec::new();
    for prompts in clip.captioner.class_prompts() {
        let x = text_embeddings(clip, &prompts);
        let mut mean = vec![0.0f32; e];
        for row in x.chunks(e) {
            mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
        }
        out.extend(mean);
    }
    normalise_rows(&mut out, e);
    out
}

/// Recall at 1 and 5 when `rank[i]` is how many candidates scored above query `i`'s match.
fn recall(ranks: &[usize]) -> [f64; 2] {
    let n = ranks.len().max(1) as f64;
    [1, 5].map(|k| ranks.iter().filter(|&&r| r < k).count() as f64 / n)
}

/// Zero-shot accuracy on every image of `data`, and retrieval between its first `pairs` images
/// and held-out captions of them drawn with `seed`. A caption text shared by several images is
/// one candidate for image → text, so identical captions neither help nor hurt.
pub fn zero_shot(
    clip: &Clip,
    data: &Dataset,
    pairs: usize,
    device: &Device,
    seed: u64,
) -> ZeroShot {
    let e = clip.config.embed_dim;
    let images = image_embeddings(clip, data, data.n, device);
    let predicted = nearest(&images, &class_embeddings(clip), e);
    let correct = predicted
        .iter()
        .zip(&data.labels)
        .filter(|&(&p, &y)| p == y as usize)
        .count();

    let pairs = pairs.min(data.n);
    let mut rng = SeededRng::seed_from_u64(seed);
    let captions: Vec<String> = (0..pairs)
        .map(|i| {
            clip.captioner.caption(
                Split::HeldOut,
                data.labels[i],
                data.image(i),
                data.w,
                &mut rng,
            )
        })
        .collect();
    let mut distinct: HashMap<&str, usize> = HashMap::new();
    let mut texts: Vec<String> = Vec::new();
    let own: Vec<usize> = captions
        .iter()
        .map(|c| {
            *distinct.entry(c).or_insert_with(|| {
                texts.push(c.clone());
                texts.len() - 1
            })
        })
        .collect();
    let text = text_embeddings(clip, &texts);
    let image = |i: usize| &images[i * e..(i + 1) * e];
    let caption = |t: usize| &text[t * e..(t + 1) * e];
    let i2t: Vec<usize> = (0..pairs)
        .map(|i| {
            let mine = dot(image(i), caption(own[i]));
            (0..texts.len())
                .filter(|&t| dot(image(i), caption(t)) > mine)
                .count()
        })
        .collect();
    let t2i: Vec<usize> = (0..pairs)
        .map(|i| {
            let mine = dot(image(i), caption(own[i]));
            (0..pairs)
                .filter(|&j| dot(image(j), caption(own[i])) > mine)
                .count()
        })
        .collect();
    ZeroShot {
        accuracy: correct as f64 / data.n.max(1) as f64,
        image_to_text: recall(&i2t),
        text_to_image: recall(&t2i),
        pairs,
        captions: texts.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_picks_the_most_similar_key() {
        // Keys along the axes; each query is closest to the axis it leans towards.
        let keys = [1.0, 0.0, 0.0, 1.0, -1.0, 0.0];
        let queries = [0.9, 0.1, 0.2, 0.8, -0.7, -0.3, -0.6, -0.5];
        assert_eq!(nearest(&queries, &keys, 2), vec![0, 1, 2, 2]);
    }

    #[test]
    fn recall_counts_matches_within_k() {
        assert_eq!(recall(&[0, 1, 4, 5]), [0.25, 0.75]);
    }
}
