//! Seeded per-image augmentations for self-supervised learning, run on the host.
//!
//! Every random choice is drawn from the `SeededRng` passed in, so a seed fixes the output exactly;
//! the loader derives that RNG from (seed, epoch, batch) to make runs reproducible and resumable.
//! Transforms are plain data ([`Transform`]) so recipes can be printed, compared and stored.

use std::f32::consts::TAU;

use crate::SeededRng;
use rand::seq::SliceRandom;
use rand::Rng;

/// One image, channel-major (`c × h × w`), values in [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// `c × h × w` values, row-major within each channel.
    pub data: Vec<f32>,
}

impl Image {
    /// Wraps `data` as a `c × h × w` image.
    #[track_caller]
    pub fn new(c: usize, h: usize, w: usize, data: Vec<f32>) -> Image {
        assert!(c > 0 && h > 0 && w > 0, "empty image {c}×{h}×{w}");
        assert_eq!(data.len(), c * h * w, "data length for a {c}×{h}×{w} image");
        Image { c, h, w, data }
    }

    fn planes_mut(&mut self) -> std::slice::ChunksExactMut<'_, f32> {
        let len = self.h * self.w;
        self.data.chunks_exact_mut(len)
    }
}

/// A single augmentation. Each keeps values in [0, 1] and every transform but
/// [`Transform::RandomResizedCrop`] keeps the image's shape.
#[derive(Clone, Debug, PartialEq)]
pub enum Transform {
    /// Crop a random region covering a `scale` fraction of the area with aspect ratio (w/h) in
    /// `ratio` (log-uniform), resized bilinearly (no antialiasing) to `size` = (h, w).
    /// torchvision's algorithm: ten tries, then a centre crop clipped to `ratio`.
    RandomResizedCrop {
        size: (usize, usize),
        scale: (f32, f32),
        ratio: (f32, f32),
    },
    /// Mirror left to right (apply it with probability 0.5 in a recipe).
    HorizontalFlip,
    /// Rotate by a uniform angle in ±`degrees` about the centre, shift by up to `translate`
    /// (fractions of width, height) and zoom by a factor in `scale`; bilinear, zero fill.
    RandomAffine {
        degrees: f32,
        translate: (f32, f32),
        scale: (f32, f32),
    },
    /// torchvision's `ColorJitter`: brightness, contrast and saturation factors uniform in
    /// `[max(0, 1 - x), 1 + x]`, hue shift uniform in `±hue` (of a full turn, at most 0.5),
    /// applied in random order; 0 disables one. Saturation and hue only touch RGB images.
    ColorJitter {
        brightness: f32,
        contrast: f32,
        saturation: f32,
        hue: f32,
    },
    /// Replace RGB by its ITU-R 601 luma in every channel (keeps 3 channels, so batches mix).
    Grayscale,
    /// Separable Gaussian blur with sigma uniform in `sigma`; the kernel spans about 10% of the
    /// smaller side (odd, at least 3), as in SimCLR, with reflect padding.
    GaussianBlur { sigma: (f32, f32) },
    /// Invert every value at or above `threshold` (`v → 1 - v`).
    Solarize { threshold: f32 },
    /// Add independent normal noise with standard deviation `std`, then clamp to [0, 1].
    GaussianNoise { std: f32 },
}

impl Transform {
    /// Applies the transform, drawing any random parameters from `rng`.
    pub fn apply(&self, img: &Image, rng: &mut SeededRng) -> Image {
        let mut out = match *self {
            Transform::RandomResizedCrop { size, scale, ratio } => {
                random_resized_crop(img, size, scale, ratio, rng)
            }
            Transform::HorizontalFlip => {
                let mut out = img.clone();
                for row in out.data.chunks_exact_mut(img.w) {
                    row.reverse();
                }
                out
            }
            Transform::RandomAffine {
                degrees,
                translate,
                scale,
            } => random_affine(img, degrees, translate, scale, rng),
            Transform::ColorJitter {
                brightness,
                contrast,
                saturation,
                hue,
            } => color_jitter(img, [brightness, contrast, saturation, hue], rng),
            Transform::Grayscale => grayscale(img),
            Transform::GaussianBlur { sigma } => gaussian_blur(img, uniform(rng, sigma.0, sigma.1)),
            Transform::Solarize { threshold } => {
                let mut out = img.clone();
                for v in &mut out.data {
                    if *v >= threshold {
                        *v = 1.0 - *v;
                    }
                }
                out
            }
            Transform::GaussianNoise { std } => gaussian_noise(img, std, rng),
        };
        // Rounding in interpolation and colour conversion must never leak outside [0, 1].
        for v in &mut out.data {
            *v = v.clamp(0.0, 1.0);
        }
        out
    }
}

/// A recipe: transforms applied in order, each with its own probability.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Augment {
    steps: Vec<(Transform, f32)>,
}

impl Augment {
    /// The empty recipe, which returns images unchanged.
    pub fn new() -> Augment {
        Augment::default()
    }

    /// Appends a step that is always applied.
    pub fn then(self, t: Transform) -> Augment {
        self.maybe(1.0, t)
    }

    /// Appends a step applied with probability `p`.
    pub fn maybe(mut self, p: f32, t: Transform) -> Augment {
        self.steps.push((t, p));
        self
    }

    /// The steps with their probabilities, in order.
    pub fn steps(&self) -> &[(Transform, f32)] {
        &self.steps
    }

    /// Runs the recipe on `img`. Each step draws its coin from `rng` whether or not it fires.
    pub fn apply(&self, img: &Image, rng: &mut SeededRng) -> Image {
        let mut out = img.clone();
        for (t, p) in &self.steps {
            if rng.random::<f32>() < *p {
                out = t.apply(&out, rng);
            }
        }
        out
    }
}

/// Uniform in `[lo, hi)`; unlike `random_range` it accepts `lo == hi`, which fixes a parameter.
fn uniform(rng: &mut SeededRng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.random::<f32>()
}

fn random_resized_crop(
    img: &Image,
    size: (usize, usize),
    scale: (f32, f32),
    ratio: (f32, f32),
    rng: &mut SeededRng,
) -> Image {
    let area = (img.h * img.w) as f32;
    let (log_lo, log_hi) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * uniform(rng, scale.0, scale.1);
        let aspect = uniform(rng, log_lo, log_hi).exp();
        let cw = (target * aspect).sqrt().round() as usize;
        let ch = (target / aspect).sqrt().round() as usize;
        if (1..=img.w).contains(&cw) && (1..=img.h).contains(&ch) {
            let top = rng.random_range(0..=img.h - ch);
            let left = rng.random_range(0..=img.w - cw);
            return resize_region(img, (top, left), (ch, cw), size);
        }
    }
    // Fallback: the largest centred crop whose aspect ratio lies within `ratio`.
    let in_ratio = img.w as f32 / img.h as f32;
    let (lo, hi) = (ratio.0.min(ratio.1), ratio.0.max(ratio.1));
    let (ch, cw) = if in_ratio < lo {
        ((img.w as f32 / lo).round() as usize, img.w)
    } else if in_ratio > hi {
        (img.h, (img.h as f32 * hi).round() as usize)
    } else {
        (img.h, img.w)
    };
    let (ch, cw) = (ch.clamp(1, img.h), cw.clamp(1, img.w));
    resize_region(img, ((img.h - ch) / 2, (img.w - cw) / 2), (ch, cw), size)
}

/// Source taps for bilinear resizing of `inp` samples to `out` with half-pixel centres
/// (PyTorch's `align_corners=False`): (lower index, upper index, weight of the upper).
fn taps(out: usize, inp: usize) -> Vec<(usize, usize, f32)> {
    let step = inp as f32 / out as f32;
    (0..out)
        .map(|o| {
            let s = ((o as f32 + 0.5) * step - 0.5).clamp(0.0, (inp - 1) as f32);
            let i0 = s.floor() as usize;
            (i0, (i0 + 1).min(inp - 1), s - i0 as f32)
        })
        .collect()
}

/// Bilinearly resizes the `extent` = (h, w) region at `origin` = (top, left) to `size`.
fn resize_region(
    img: &Image,
    origin: (usize, usize),
    extent: (usize, usize),
    size: (usize, usize),
) -> Image {
    let (oh, ow) = size;
    let ys = taps(oh, extent.0);
    let xs = taps(ow, extent.1);
    let mut data = Vec::with_capacity(img.c * oh * ow);
    for plane in img.data.chunks_exact(img.h * img.w) {
        let at = |y: usize, x: usize| plane[(origin.0 + y) * img.w + origin.1 + x];
        for &(y0, y1, ty) in &ys {
            for &(x0, x1, tx) in &xs {
                let top = at(y0, x0) + (at(y0, x1) - at(y0, x0)) * tx;
                let bottom = at(y1, x0) + (at(y1, x1) - at(y1, x0)) * tx;
                data.push(top + (bottom - top) * ty);
            }
        }
    }
    Image {
        c: img.c,
        h: oh,
        w: ow,
        data,
    }
}

fn random_affine(
    img: &Image,
    degrees: f32,
    translate: (f32, f32),
    scale: (f32, f32),
    rng: &mut SeededRng,
) -> Image {
    let angle = uniform(rng, -degrees, degrees).to_radians();
    let tx = uniform(rng, -translate.0, translate.0) * img.w as f32;
    let ty = uniform(rng, -translate.1, translate.1) * img.h as f32;
    let zoom = uniform(rng, scale.0, scale.1);
    let (sin, cos) = angle.sin_cos();
    let (cx, cy) = ((img.w as f32 - 1.0) / 2.0, (img.h as f32 - 1.0) / 2.0);
    let mut out = img.clone();
    for (src, dst) in img.data.chunks_exact(img.h * img.w).zip(out.planes_mut()) {
        for (y, row) in dst.chunks_exact_mut(img.w).enumerate() {
            for (x, v) in row.iter_mut().enumerate() {
                // Inverse map: undo the shift, then the rotation and zoom about the centre.
                let (dx, dy) = (x as f32 - cx - tx, y as f32 - cy - ty);
                let sx = (cos * dx + sin * dy) / zoom + cx;
                let sy = (cos * dy - sin * dx) / zoom + cy;
                *v = sample_zero(src, img.w, img.h, sx, sy);
            }
        }
    }
    out
}

/// Bilinear sample of a `w × h` plane at (x, y); outside pixels count as 0 (non-finite
/// coordinates, from a zero zoom, land outside).
fn sample_zero(plane: &[f32], w: usize, h: usize, x: f32, y: f32) -> f32 {
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let mut acc = 0.0;
    for (yy, wy) in [(y0, 1.0 - fy), (y0 + 1.0, fy)] {
        for (xx, wx) in [(x0, 1.0 - fx), (x0 + 1.0, fx)] {
            if xx >= 0.0 && xx < w as f32 && yy >= 0.0 && yy < h as f32 {
                acc += wy * wx * plane[yy as usize * w + xx as usize];
            }
        }
    }
    acc
}

/// ColorJitter with `strength` = [brightness, contrast, saturation, hue], drawing the order and
/// then the factors the way torchvision does.
fn color_jitter(img: &Image, strength: [f32; 4], rng: &mut SeededRng) -> Image {
    let mut order = [0, 1, 2, 3];
    order.shuffle(rng);
    let mut factors = [None; 4];
    for (k, (&s, f)) in strength.iter().zip(&mut factors).enumerate() {
        if s > 0.0 {
            *f = Some(if k == 3 {
                uniform(rng, -s, s)
            } else {
                uniform(rng, (1.0 - s).max(0.0), 1.0 + s)
            });
        }
    }
    let rgb = img.c == 3;
    let mut out = img.clone();
    for k in order {
        let Some(f) = factors[k] else { continue };
        match k {
            0 => blend(&mut out.data, f, |_| 0.0),
            1 => {
                let mean = luma_plane(&out).iter().sum::<f32>() / (out.h * out.w) as f32;
                blend(&mut out.data, f, |_| mean);
            }
            2 if rgb => {
                let gray = luma_plane(&out);
                blend(&mut out.data, f, |i| gray[i % gray.len()]);
            }
            3 if rgb => shift_hue(&mut out, f),
            _ => {}
        }
    }
    out
}

/// `v ← clamp(f·v + (1 − f)·other(i))`, torchvision's `_blend`.
fn blend(data: &mut [f32], f: f32, other: impl Fn(usize) -> f32) {
    for (i, v) in data.iter_mut().enumerate() {
        *v = (f * *v + (1.0 - f) * other(i)).clamp(0.0, 1.0);
    }
}

/// Per-pixel ITU-R 601 luma of an RGB image; any other image's channel mean.
fn luma_plane(img: &Image) -> Vec<f32> {
    let len = img.h * img.w;
    let planes: Vec<&[f32]> = img.data.chunks_exact(len).collect();
    (0..len)
        .map(|i| match planes.as_slice() {
            [r, g, b] => 0.299 * r[i] + 0.587 * g[i] + 0.114 * b[i],
            _ => planes.iter().map(|p| p[i]).sum::<f32>() / img.c as f32,
        })
        .collect()
}

fn grayscale(img: &Image) -> Image {
    if img.c != 3 {
        return img.clone();
    }
    let gray = luma_plane(img);
    Image {
        data: gray.repeat(3),
        ..*img
    }
}

/// Rotates the hue of an RGB image by `shift` turns, via HSV as torchvision does.
fn shift_hue(img: &mut Image, shift: f32) {
    let len = img.h * img.w;
    let (r, rest) = img.data.split_at_mut(len);
    let (g, b) = rest.split_at_mut(len);
    for i in 0..len {
        let (h, s, v) = rgb_to_hsv(r[i], g[i], b[i]);
        (r[i], g[i], b[i]) = hsv_to_rgb((h + shift).rem_euclid(1.0), s, v);
    }
}

fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let max = r.max(g).max(b);
    let range = max - r.min(g).min(b);
    if range == 0.0 {
        return (0.0, 0.0, max);
    }
    let (rc, gc, bc) = ((max - r) / range, (max - g) / range, (max - b) / range);
    let h = if max == r {
        bc - gc
    } else if max == g {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    ((h / 6.0).rem_euclid(1.0), range / max, max)
}

fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let h6 = h * 6.0;
    let sector = h6.floor();
    let f = h6 - sector;
    let p = v * (1.0 - s);
    let q = v * (1.0 - s * f);
    let t = v * (1.0 - s * (1.0 - f));
    match sector as i32 % 6 {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

/// Odd kernel size spanning about 10% of the smaller side, at least 3.
fn blur_kernel_size(h: usize, w: usize) -> usize {
    ((0.1 * h.min(w) as f32).round() as usize | 1).max(3)
}

/// Index `i` reflected into `0..n` without repeating the edge (`-1 → 1`), as `reflect` padding.
fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m >= n as isize { period - m } else { m }) as usize
}

fn gaussian_blur(img: &Image, sigma: f32) -> Image {
    let k = blur_kernel_size(img.h, img.w);
    let r = (k / 2) as isize;
    // A zero sigma would divide 0 by 0; a tiny one gives the identity kernel.
    let two_var = 2.0 * sigma.max(1e-3).powi(2);
    let raw: Vec<f32> = (-r..=r)
        .map(|d| (-(d * d) as f32 / two_var).exp())
        .collect();
    let total: f32 = raw.iter().sum();
    let kernel: Vec<f32> = raw.iter().map(|v| v / total).collect();
    let (h, w) = (img.h, img.w);
    let mut out = img.clone();
    let mut tmp = vec![0.0; h * w];
    for plane in out.planes_mut() {
        for y in 0..h {
            for x in 0..w {
                tmp[y * w + x] = (-r..=r)
                    .zip(&kernel)
                    .map(|(d, kv)| kv * plane[y * w + reflect(x as isize + d, w)])
                    .sum();
            }
        }
        for y in 0..h {
            for x in 0..w {
                plane[y * w + x] = (-r..=r)
                    .zip(&kernel)
                    .map(|(d, kv)| kv * tmp[reflect(y as isize + d, h) * w + x])
                    .sum();
            }
        }
    }
    out
}

/// Adds N(0, std²) noise, two values per Box–Muller draw.
fn gaussian_noise(img: &Image, std: f32, rng: &mut SeededRng) -> Image {
    let mut out = img.clone();
    for pair in out.data.chunks_mut(2) {
        let u1 = 1.0 - rng.random::<f32>(); // (0, 1], so the log is finite
        let radius = (-2.0 * u1.ln()).sqrt() * std;
        let (sin, cos) = (TAU * rng.random::<f32>()).sin_cos();
        pair[0] += radius * cos;
        if let Some(v) = pair.get_mut(1) {
            *v += radius * sin;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jitter(brightness: f32, contrast: f32, saturation: f32, hue: f32) -> Transform {
        Transform::ColorJitter {
            brightness,
            contrast,
            saturation,
            hue,
        }
    }
    use rand::SeedableRng;

    fn rng(seed: u64) -> SeededRng {
        SeededRng::seed_from_u64(seed)
    }

    /// An irregular pattern in [0, 1] with no symmetry.
    fn pattern(c: usize, h: usize, w: usize) -> Image {
        let data = (0..c * h * w)
            .map(|i| ((i * 37 + i / 7) % 101) as f32 / 100.0)
            .collect();
        Image::new(c, h, w, data)
    }

    fn in_range(img: &Image) -> bool {
        img.data.iter().all(|v| (0.0..=1.0).contains(v))
    }

    /// Shape, range and seeding: the same seed repeats, another seed differs (if `random`).
    fn check(t: &Transform, img: &Image, shape: (usize, usize, usize), random: bool) {
        let a = t.apply(img, &mut rng(1));
        assert_eq!((a.c, a.h, a.w), shape, "{t:?}");
        assert_eq!(a.data.len(), shape.0 * shape.1 * shape.2, "{t:?}");
        assert!(in_range(&a), "{t:?} left [0, 1]");
        assert_eq!(a, t.apply(img, &mut rng(1)), "{t:?} is not deterministic");
        if random {
            assert_ne!(a, t.apply(img, &mut rng(2)), "{t:?} ignores the seed");
        }
    }

    #[test]
    fn random_resized_crop() {
        let t = Transform::RandomResizedCrop {
            size: (16, 12),
            scale: (0.08, 1.0),
            ratio: (0.75, 4.0 / 3.0),
        };
        check(&t, &pattern(3, 32, 40), (3, 16, 12), true);
        // The whole square at its own size is the identity (half-pixel centres map exactly).
        let img = pattern(3, 20, 20);
        let whole = Transform::RandomResizedCrop {
            size: (20, 20),
            scale: (1.0, 1.0),
            ratio: (1.0, 1.0),
        };
        assert_eq!(whole.apply(&img, &mut rng(5)), img);
        // An impossible scale falls back to the centred square of a tall image.
        let tall = pattern(1, 32, 16);
        let fallback = Transform::RandomResizedCrop {
            size: (16, 16),
            scale: (2.0, 2.0),
            ratio: (1.0, 1.0),
        };
        assert_eq!(
            fallback.apply(&tall, &mut rng(5)).data,
            tall.data[8 * 16..24 * 16]
        );
    }

    #[test]
    fn bilinear_halving_averages_pairs() {
        let img = Image::new(1, 1, 4, vec![0.0, 0.2, 0.6, 1.0]);
        let out = resize_region(&img, (0, 0), (1, 4), (1, 2));
        assert!((out.data[0] - 0.1).abs() < 1e-6 && (out.data[1] - 0.8).abs() < 1e-6);
    }

    #[test]
    fn horizontal_flip() {
        let img = pattern(3, 5, 7);
        let t = Transform::HorizontalFlip;
        check(&t, &img, (3, 5, 7), false);
        let once = t.apply(&img, &mut rng(0));
        assert_ne!(once, img);
        assert_eq!(once.data[0], img.data[6]);
        assert_eq!(t.apply(&once, &mut rng(0)), img);
    }

    #[test]
    fn random_affine() {
        let t = Transform::RandomAffine {
            degrees: 30.0,
            translate: (0.1, 0.2),
            scale: (0.8, 1.2),
        };
        check(&t, &pattern(3, 24, 20), (3, 24, 20), true);
        let still = Transform::RandomAffine {
            degrees: 0.0,
            translate: (0.0, 0.0),
            scale: (1.0, 1.0),
        };
        let img = pattern(2, 9, 8);
        assert_eq!(still.apply(&img, &mut rng(3)), img);
        // A pure half-zoom keeps the centre and fills the border with zeros.
        let img = Image::new(1, 9, 9, vec![1.0; 81]);
        let shrink = Transform::RandomAffine {
            degrees: 0.0,
            translate: (0.0, 0.0),
            scale: (0.5, 0.5),
        };
        let out = shrink.apply(&img, &mut rng(3));
        assert_eq!((out.data[40], out.data[0]), (1.0, 0.0));
    }

    #[test]
    fn color_jitter() {
        let t = jitter(0.4, 0.4, 0.4, 0.1);
        check(&t, &pattern(3, 8, 8), (3, 8, 8), true);
        check(
            &jitter(0.4, 0.4, 0.0, 0.0),
            &pattern(1, 8, 8),
            (1, 8, 8),
            true,
        );
        let img = pattern(3, 8, 8);
        assert_eq!(jitter(0.0, 0.0, 0.0, 0.0).apply(&img, &mut rng(9)), img);
        // Saturation and hue leave a one-channel image alone.
        let gray = pattern(1, 8, 8);
        assert_eq!(jitter(0.0, 0.0, 0.9, 0.5).apply(&gray, &mut rng(9)), gray);
        // Brightness only scales: ratios between unclipped pixels are kept.
        let dim = Image::new(1, 1, 2, vec![0.1, 0.3]);
        let out = jitter(0.5, 0.0, 0.0, 0.0).apply(&dim, &mut rng(4));
        assert!((out.data[1] / out.data[0] - 3.0).abs() < 1e-5);
        // Full contrast reduction makes an image flat at its mean.
        let flat = Transform::ColorJitter {
            brightness: 0.0,
            contrast: 1.0,
            saturation: 0.0,
            hue: 0.0,
        };
        let mut r = rng(0);
        let out = (0..200)
            .map(|_| flat.apply(&dim, &mut r))
            .min_by(|a, b| {
                let spread = |i: &Image| (i.data[1] - i.data[0]).abs();
                spread(a).total_cmp(&spread(b))
            })
            .unwrap();
        assert!((out.data[0] - out.data[1]).abs() < 0.02 && (out.data[0] - 0.2).abs() < 0.01);
    }

    #[test]
    fn hsv_round_trip_and_hue_shift() {
        let img = pattern(3, 6, 6);
        for i in 0..36 {
            let (r, g, b) = (img.data[i], img.data[36 + i], img.data[72 + i]);
            let (h, s, v) = rgb_to_hsv(r, g, b);
            let (r2, g2, b2) = hsv_to_rgb(h, s, v);
            assert!((r - r2).abs() + (g - g2).abs() + (b - b2).abs() < 1e-5);
        }
        // A third of a turn maps pure red to pure green; grey has no hue to turn.
        let mut red = Image::new(3, 1, 2, vec![1.0, 0.5, 0.0, 0.5, 0.0, 0.5]);
        shift_hue(&mut red, 1.0 / 3.0);
        assert!((red.data[0]).abs() < 1e-5 && (red.data[2] - 1.0).abs() < 1e-5);
        assert_eq!((red.data[1], red.data[3], red.data[5]), (0.5, 0.5, 0.5));
    }

    #[test]
    fn grayscale() {
        let img = pattern(3, 4, 5);
        let t = Transform::Grayscale;
        check(&t, &img, (3, 4, 5), false);
        let out = t.apply(&img, &mut rng(0));
        for i in 0..20 {
            assert_eq!(out.data[i], out.data[20 + i]);
            assert_eq!(out.data[i], out.data[40 + i]);
            let luma = 0.299 * img.data[i] + 0.587 * img.data[20 + i] + 0.114 * img.data[40 + i];
            assert!((out.data[i] - luma).abs() < 1e-6);
        }
        let one = pattern(1, 4, 5);
        assert_eq!(t.apply(&one, &mut rng(0)), one);
    }

    #[test]
    fn gaussian_blur() {
        let t = Transform::GaussianBlur { sigma: (0.1, 2.0) };
        check(&t, &pattern(3, 30, 30), (3, 30, 30), true);
        assert_eq!(blur_kernel_size(28, 28), 3);
        assert_eq!(blur_kernel_size(224, 224), 23);
        assert_eq!(blur_kernel_size(96, 64), 7);
        assert_eq!(
            (-3..8).map(|i| reflect(i, 4)).collect::<Vec<_>>(),
            vec![3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1]
        );
        // A constant image keeps its value (and so its mean).
        let flat = Image::new(1, 10, 10, vec![0.3; 100]);
        let out = t.apply(&flat, &mut rng(1));
        assert!(out.data.iter().all(|v| (v - 0.3).abs() < 1e-6));
        // A checkerboard loses contrast.
        let board = Image::new(
            1,
            10,
            10,
            (0..100).map(|i| ((i + i / 10) % 2) as f32).collect(),
        );
        let strong = Transform::GaussianBlur { sigma: (2.0, 2.0) };
        let out = strong.apply(&board, &mut rng(1));
        let var = |d: &[f32]| d.iter().map(|v| (v - 0.5).powi(2)).sum::<f32>() / d.len() as f32;
        assert!(var(&out.data) < 0.1 * var(&board.data));
    }

    #[test]
    fn solarize() {
        let img = pattern(3, 4, 4);
        check(
            &Transform::Solarize { threshold: 0.5 },
            &img,
            (3, 4, 4),
            false,
        );
        let inverted = Transform::Solarize { threshold: 0.0 }.apply(&img, &mut rng(0));
        for (a, b) in inverted.data.iter().zip(&img.data) {
            assert_eq!(*a, 1.0 - b);
        }
        let none = Transform::Solarize { threshold: 1.5 }.apply(&img, &mut rng(0));
        assert_eq!(none, img);
    }

    #[test]
    fn gaussian_noise() {
        let t = Transform::GaussianNoise { std: 0.1 };
        check(&t, &pattern(3, 8, 8), (3, 8, 8), true);
        let mid = Image::new(1, 100, 100, vec![0.5; 10_000]);
        let out = t.apply(&mid, &mut rng(2));
        let n = out.data.len() as f32;
        let mean = out.data.iter().sum::<f32>() / n;
        let std = (out.data.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n).sqrt();
        assert!(
            (mean - 0.5).abs() < 0.005 && (std - 0.1).abs() < 0.005,
            "{mean} {std}"
        );
        assert_eq!(
            Transform::GaussianNoise { std: 0.0 }.apply(&mid, &mut rng(2)),
            mid
        );
    }

    #[test]
    fn recipes_give_requested_shape_range_and_seeding() {
        let rgb = pattern(3, 40, 36);
        let aug = Augment::new()
            .then(Transform::RandomResizedCrop {
                size: (32, 32),
                scale: (0.08, 1.0),
                ratio: (0.75, 4.0 / 3.0),
            })
            .maybe(0.5, Transform::HorizontalFlip)
            .maybe(
                0.8,
                Transform::ColorJitter {
                    brightness: 0.4,
                    contrast: 0.4,
                    saturation: 0.4,
                    hue: 0.1,
                },
            )
            .maybe(0.2, Transform::Grayscale)
            .maybe(0.5, Transform::GaussianBlur { sigma: (0.1, 2.0) });
        let a = aug.apply(&rgb, &mut rng(11));
        assert_eq!((a.c, a.h, a.w), (3, 32, 32));
        assert!(in_range(&a));
        assert_eq!(a, aug.apply(&rgb, &mut rng(11)));
        assert_ne!(a, aug.apply(&rgb, &mut rng(12)));
        let digit = pattern(1, 28, 28);
        assert_eq!(Augment::new().apply(&digit, &mut rng(0)), digit);
        let p0 = Augment::new().maybe(0.0, Transform::HorizontalFlip);
        assert_eq!(p0.apply(&digit, &mut rng(0)), digit);
    }
}
