//! Measuring a trained encoder the same way for every method: the results table (linear probe,
//! kNN, effective rank) beside raw pixels, a random-init encoder and optionally a supervised
//! ceiling, the collapse monitor, a PCA scatter of the held-out embeddings, and fine-tuning.

use crate::plot::{Chart, Kind, Series};
use selfsup_engine::data::{Augment, Dataset};
use selfsup_engine::nn::Init;
use selfsup_engine::Device;
use selfsup_models::eval::{
    extract_features, finetune, knn_accuracy, linear_probe, raw_pixels, Features, FinetuneConfig,
    ZeroShot,
};
use selfsup_models::vit::VisionTransformer;
use std::path::Path;
use std::time::Instant;

/// One line of the results table.
#[derive(Clone, Debug)]
pub struct Row {
    pub label: String,
    pub probe: f64,
    pub knn: f64,
    /// Effective rank and feature width (none for pixels).
    pub rank: Option<(f64, usize)>,
}

fn score(
    label: &str,
    tr: &Features,
    te: &Features,
    classes: usize,
    seed: u64,
    learned: bool,
) -> Row {
    Row {
        label: label.to_string(),
        probe: linear_probe(tr, te, classes, seed).accuracy * 100.0,
        knn: knn_accuracy(tr, te, 20, 0.07, classes) * 100.0,
        rank: learned.then(|| (tr.effective_rank(), tr.dim)),
    }
}

/// The standard deviation over samples of the L2-normalised features, averaged over dimensions
/// (lightly's collapse monitor): 0 when every image maps to one point, about 1/√d when the
/// features spread evenly over the sphere.
pub fn normalised_std(f: &Features) -> f64 {
    let rows: Vec<Vec<f64>> = (0..f.n)
        .map(|i| {
            let r = f.row(i);
            let norm = r
                .iter()
                .map(|&v| (v as f64).powi(2))
                .sum::<f64>()
                .sqrt()
                .max(1e-12);
            r.iter().map(|&v| v as f64 / norm).collect()
        })
        .collect();
    let n = f.n.max(1) as f64;
    (0..f.dim)
        .map(|j| {
            let mean = rows.iter().map(|r| r[j]).sum::<f64>() / n;
            (rows.iter().map(|r| (r[j] - mean).powi(2)).sum::<f64>() / n).sqrt()
        })
        .sum::<f64>()
        / f.dim.max(1) as f64
}

/// The results rows: the encoder, a random-init encoder of the same shape, raw pixels, and with
/// `supervised = Some((epochs, recipe))` the same ViT trained on every training label, each epoch
/// on fresh views of `recipe` — all scored by the same probe and kNN.
pub fn evaluate(
    title: &str,
    encoder: &VisionTransformer,
    train: &Dataset,
    test: &Dataset,
    device: &Device,
    seed: u64,
    supervised: Option<(usize, Augment)>,
) -> Vec<Row> {
    let classes = train.classes.max(test.classes);
    let t = Instant::now();
    let feats = |enc: &VisionTransformer| {
        (
            extract_features(enc, train, 256, device),
            extract_features(enc, test, 256, device),
        )
    };
    let (tr, te) = feats(encoder);
    let mut rows = vec![score(title, &tr, &te, classes, seed, true)];
    println!(
        "collapse monitor: std of normalised features {:.3} (1/√d = {:.3}; 0 is collapse)",
        normalised_std(&te),
        1.0 / (te.dim as f64).sqrt()
    );
    let random = VisionTransformer::new(
        &mut Init::new(seed.wrapping_add(1), device),
        encoder.config.clone(),
    );
    let (rtr, rte) = feats(&random);
    rows.push(score(
        "random-init ViT (frozen)",
        &rtr,
        &rte,
        classes,
        seed,
        true,
    ));
    rows.push(score(
        "raw pixels",
        &raw_pixels(train),
        &raw_pixels(test),
        classes,
        seed,
        false,
    ));
    if let Some((epochs, augment)) = supervised {
        let vit = VisionTransformer::new(
            &mut Init::new(seed.wrapping_add(2), device),
            encoder.config.clone(),
        );
        let cfg = FinetuneConfig {
            epochs,
            encoder_lr_scale: 1.0,
            seed,
            augment: Some(augment),
            ..FinetuneConfig::default()
        };
        let head = finetune(&vit, train, test, &cfg, device) * 100.0;
        let (str_, ste) = feats(&vit);
        let label = format!(
            "supervised ViT ({} labels, {epochs} epochs, augmented; its own head {head:.1} %)",
            train.n
        );
        rows.push(score(&label, &str_, &ste, classes, seed, true));
    }
    println!(
        "\nevaluation on {} held-out images ({:.1} s)",
        test.n,
        t.elapsed().as_secs_f64()
    );
    rows
}

/// The table as scripts read it: the method's row first, then the baselines.
pub fn print_table(rows: &[Row]) {
    println!("| method | linear probe % | kNN % (k=20) | effective rank |");
    println!("|---|---|---|---|");
    for r in rows {
        let rank = match r.rank {
            Some((rank, dim)) => format!("{rank:.1} of {dim}"),
            None => "-".into(),
        };
        println!("| {} | {:.1} | {:.1} | {rank} |", r.label, r.probe, r.knn);
    }
}

/// CLIP's lines under the table: zero-shot accuracy from held-out prompt templates, and recall
/// between held-out images and held-out captions of them.
pub fn print_zero_shot(z: &ZeroShot) {
    println!("zero-shot accuracy {:.1} %", z.accuracy * 100.0);
    println!(
        "retrieval over {} held-out pairs ({} distinct captions): image→text R@1 {:.1} %, R@5 {:.1} %; text→image R@1 \
         {:.1} %, R@5 {:.1} %",
        z.pairs,
        z.captions,
        z.image_to_text[0] * 100.0,
        z.image_to_text[1] * 100.0,
        z.text_to_image[0] * 100.0,
        z.text_to_image[1] * 100.0
    );
}

/// The two leading principal components of `x` (n × d, centred), by power iteration with
/// deflation on the covariance.
fn top_two_components(x: &[Vec<f64>], d: usize) -> [Vec<f64>; 2] {
    let mut cov = vec![0.0; d * d];
    for r in x {
        for a in 0..d {
            for b in 0..d {
                cov[a * d + b] += r[a] * r[b];
            }
        }
    }
    let mut out = [vec![0.0; d], vec![0.0; d]];
    for (k, comp) in out.iter_mut().enumerate() {
        let mut v: Vec<f64> = (0..d).map(|i| 1.0 + (i * (k + 3)) as f64 % 7.0).collect();
        for _ in 0..200 {
            let mut w: Vec<f64> = (0..d)
                .map(|a| (0..d).map(|b| cov[a * d + b] * v[b]).sum())
                .collect();
            let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-300);
            w.iter_mut().for_each(|x| *x /= norm);
            v = w;
        }
        let lambda: f64 = (0..d)
            .map(|a| v[a] * (0..d).map(|b| cov[a * d + b] * v[b]).sum::<f64>())
            .sum();
        for a in 0..d {
            for b in 0..d {
                cov[a * d + b] -= lambda * v[a] * v[b];
            }
        }
        *comp = v;
    }
    out
}

/// `pca.png`: the held-out embeddings projected on their two principal components, one colour a
/// class — clusters by class mean the representation separates what the labels separate.
pub fn pca_scatter(
    encoder: &VisionTransformer,
    test: &Dataset,
    device: &Device,
    path: &Path,
    title: &str,
) -> Result<(), String> {
    let f = extract_features(encoder, test, 256, device);
    let d = f.dim;
    let mean: Vec<f64> = (0..d)
        .map(|j| (0..f.n).map(|i| f.row(i)[j] as f64).sum::<f64>() / f.n.max(1) as f64)
        .collect();
    let x: Vec<Vec<f64>> = (0..f.n)
        .map(|i| {
            f.row(i)
                .iter()
                .zip(&mean)
                .map(|(&v, m)| v as f64 - m)
                .collect()
        })
        .collect();
    let [c1, c2] = top_two_components(&x, d);
    let dot = |r: &[f64], c: &[f64]| r.iter().zip(c).map(|(a, b)| a * b).sum::<f64>();
    let classes = test.classes;
    let series = (0..classes)
        .map(|c| Series {
            name: format!("class {c}"),
            points: x
                .iter()
                .zip(&f.y)
                .filter(|(_, &y)| y as usize == c)
                .map(|(r, _)| (dot(r, &c1), dot(r, &c2)))
                .collect(),
        })
        .collect();
    let chart = Chart {
        title: format!("{title}: held-out embeddings, first two principal components"),
        x_label: "PC 1".into(),
        y_label: "PC 2".into(),
        series,
        log_y: false,
        kind: Kind::Scatter,
    };
    chart
        .save_png(path, 900, 700)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    println!("embedding scatter: {}", path.display());
    Ok(())
}

/// Full fine-tuning on `labels` labelled images (0: skip): the pre-trained encoder (changed in
/// place, after its checkpoint was written) against a random-init one given the same budget.
#[allow(clippy::too_many_arguments)]
pub fn fine_tune(
    labels: usize,
    epochs: usize,
    encoder: &VisionTransformer,
    train: &Dataset,
    test: &Dataset,
    device: &Device,
    seed: u64,
    title: &str,
) {
    if labels == 0 {
        return;
    }
    let t = Instant::now();
    let (_, labelled) = train.split(labels, seed ^ 0x5EED);
    let cfg = FinetuneConfig {
        epochs,
        seed,
        ..FinetuneConfig::default()
    };
    let ours = finetune(encoder, &labelled, test, &cfg, device);
    let random = VisionTransformer::new(
        &mut Init::new(seed.wrapping_add(1), device),
        encoder.config.clone(),
    );
    let theirs = finetune(&random, &labelled, test, &cfg, device);
    println!(
        "\nfine-tuning on {labels} labels, {} epochs (head lr {}, encoder lr ×{}; {:.1} s)",
        cfg.epochs,
        cfg.lr,
        cfg.encoder_lr_scale,
        t.elapsed().as_secs_f64()
    );
    println!("| method | fine-tuned accuracy % |");
    println!("|---|---|");
    println!("| {title} | {:.1} |", ours * 100.0);
    println!("| random-init ViT | {:.1} |", theirs * 100.0);
}
