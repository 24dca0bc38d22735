//! An in-memory labelled image dataset, the common form every file format is loaded into.

use std::path::Path;

use crate::SeededRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::idx::{labels_path_for, read_idx};
use crate::error::{Error, Result};

/// Labelled images held in memory as `f32` in [0, 1], so augmentations and batching never have to
/// know which file format they came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// All images, `n × c × h × w`, channel-major within each image; values in [0, 1].
    pub images: Vec<f32>,
    /// One label per image, each below `classes`.
    pub labels: Vec<u32>,
    /// Number of images.
    pub n: usize,
    /// Channels per image.
    pub c: usize,
    /// Image height.
    pub h: usize,
    /// Image width.
    pub w: usize,
    /// Number of classes (labels are `0..classes`).
    pub classes: usize,
}

impl Dataset {
    /// Number of values in one image (`c × h × w`).
    pub fn image_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Image `i` as `c × h × w` values.
    #[track_caller]
    pub fn image(&self, i: usize) -> &[f32] {
        assert!(i < self.n, "image {i} out of range for {} images", self.n);
        let len = self.image_len();
        &self.images[i * len..(i + 1) * len]
    }

    /// Loads MNIST-style IDX images (`n × rows × cols` bytes) and the labels file found next to
    /// them by [`labels_path_for`]. `classes` is the largest label plus one.
    pub fn load_idx(images_path: &Path) -> Result<Dataset> {
        let images = read_idx(images_path)?;
        let &[n, h, w] = images.dims.as_slice() else {
            return Err(Error::format(
                images_path,
                format!(
                    "expected 3-D images (count, rows, cols), got dims {:?}",
                    images.dims
                ),
            ));
        };
        if n == 0 || h == 0 || w == 0 {
            return Err(Error::format(
                images_path,
                format!("holds {n} images of {h}×{w} pixels: nothing to learn from"),
            ));
        }
        let labels_path = labels_path_for(images_path)?;
        let labels = read_idx(&labels_path)?;
        if labels.dims.len() != 1 {
            return Err(Error::format(
                &labels_path,
                format!("expected 1-D labels, got dims {:?}", labels.dims),
            ));
        }
        if labels.dims[0] != n {
            return Err(Error::format(
                &labels_path,
                format!(
                    "{} labels but {} holds {n} images",
                    labels.dims[0],
                    images_path.display()
                ),
            ));
        }
        let classes = labels.data.iter().max().map_or(0, |&m| m as usize + 1);
        let mut seen = vec![false; classes];
        labels.data.iter().for_each(|&l| seen[l as usize] = true);
        let present = seen.iter().filter(|&&s| s).count();
        // Labels must be 0…K−1: one stray 200 among ten digit classes would make 201 classes.
        // (Only judged where there are enough images for every class to occur.)
        if n >= classes && present * 2 < classes {
            return Err(Error::format(
                &labels_path,
                format!(
                    "labels run up to {} but only {present} distinct values occur; labels must \
                     be the classes 0…K−1",
                    classes - 1
                ),
            ));
        }
        Ok(Dataset {
            images: images.data.iter().map(|&b| f32::from(b) / 255.0).collect(),
            labels: labels.data.iter().map(|&l| u32::from(l)).collect(),
            n,
            c: 1,
            h,
            w,
            classes,
        })
    }

    /// The images at `idx`, in that order (repeats allowed); `classes` is kept, so a subset that
    /// happens to miss a class still describes the same label space.
    #[track_caller]
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        let mut images = Vec::with_capacity(idx.len() * self.image_len());
        for &i in idx {
            images.extend_from_slice(self.image(i));
        }
        Dataset {
            images,
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            n: idx.len(),
            ..*self
        }
    }

    /// Splits into `(train, val)` with `n_val` images in `val`, chosen by a shuffle seeded with
    /// `seed`, so the same seed always holds out the same images.
    #[track_caller]
    pub fn split(&self, n_val: usize, seed: u64) -> (Dataset, Dataset) {
        assert!(
            n_val <= self.n,
            "cannot hold out {n_val} of {} images",
            self.n
        );
        let mut order: Vec<usize> = (0..self.n).collect();
        order.shuffle(&mut SeededRng::seed_from_u64(seed));
        let (val, train) = order.split_at(n_val);
        (self.subset(train), self.subset(val))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_util::{shared_data, TempDir};

    fn idx_file(dir: &TempDir, name: &str, dims: &[u32], data: &[u8]) {
        let mut bytes = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            bytes.extend_from_slice(&d.to_be_bytes());
        }
        bytes.extend_from_slice(data);
        dir.write(name, &bytes);
    }

    fn toy(n: usize) -> Dataset {
        Dataset {
            images: (0..n * 2).map(|v| v as f32).collect(),
            labels: (0..n as u32).map(|i| i % 3).collect(),
            n,
            c: 1,
            h: 1,
            w: 2,
            classes: 3,
        }
    }

    #[test]
    fn loads_real_mnist() {
        let ds = Dataset::load_idx(&shared_data("mnist9k-images-idx3-ubyte.gz")).unwrap();
        assert_eq!((ds.n, ds.c, ds.h, ds.w, ds.classes), (9000, 1, 28, 28, 10));
        assert_eq!(ds.images.len(), 9000 * 784);
        assert_eq!(ds.labels.len(), 9000);
        assert!(ds.images.iter().all(|v| (0.0..=1.0).contains(v)));
        // MNIST digits are thin strokes on black: mean intensity is about 0.13.
        let mean = ds.images.iter().map(|&v| f64::from(v)).sum::<f64>() / ds.images.len() as f64;
        assert!((0.12..0.14).contains(&mean), "mean intensity {mean}");
        // Every class is present (777–1,014 images each).
        for class in 0..10 {
            let count = ds.labels.iter().filter(|&&l| l == class).count();
            assert!((777..=1014).contains(&count), "class {class}: {count}");
        }
        // The border of a centred digit is blank.
        assert!(ds.image(0)[..28].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn count_mismatch_is_refused() {
        let dir = TempDir::new("ds-count");
        idx_file(&dir, "m-images-idx3-ubyte", &[3, 2, 2], &[0; 12]);
        idx_file(&dir, "m-labels-idx1-ubyte", &[2], &[0, 1]);
        let msg = Dataset::load_idx(&dir.path("m-images-idx3-ubyte"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("m-labels-idx1-ubyte") && msg.contains("2 labels but"),
            "{msg}"
        );
        assert!(msg.contains("holds 3 images"), "{msg}");
    }

    #[test]
    fn wrong_dims_are_refused() {
        let dir = TempDir::new("ds-dims");
        idx_file(&dir, "d-images-idx3-ubyte", &[4, 3], &[0; 12]);
        let msg = Dataset::load_idx(&dir.path("d-images-idx3-ubyte"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("expected 3-D images") && msg.contains("[4, 3]"),
            "{msg}"
        );
        idx_file(&dir, "e-images-idx3-ubyte", &[2, 1, 1], &[0, 255]);
        idx_file(&dir, "e-labels-idx1-ubyte", &[1, 2], &[0, 1]);
        let msg = Dataset::load_idx(&dir.path("e-images-idx3-ubyte"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("expected 1-D labels"), "{msg}");
    }

    #[test]
    fn small_idx_pair_loads_scaled() {
        let dir = TempDir::new("ds-small");
        idx_file(&dir, "s-images-idx3-ubyte", &[2, 1, 2], &[0, 255, 51, 102]);
        idx_file(&dir, "s-labels-idx1-ubyte", &[2], &[4, 1]);
        let ds = Dataset::load_idx(&dir.path("s-images-idx3-ubyte")).unwrap();
        assert_eq!(ds.images, vec![0.0, 1.0, 0.2, 0.4]);
        assert_eq!(ds.labels, vec![4, 1]);
        assert_eq!(ds.classes, 5);
        assert_eq!(ds.image(1), &[0.2, 0.4]);
    }

    #[test]
    fn subset_picks_images_and_labels_in_order() {
        let ds = toy(5);
        let s = ds.subset(&[4, 1, 1]);
        assert_eq!(s.n, 3);
        assert_eq!(s.images, vec![8.0, 9.0, 2.0, 3.0, 2.0, 3.0]);
        assert_eq!(s.labels, vec![1, 1, 1]);
        assert_eq!((s.c, s.h, s.w, s.classes), (1, 1, 2, 3));
    }

    #[test]
    fn split_is_seeded_and_partitions() {
        let ds = toy(20);
        let (train, val) = ds.split(6, 7);
        assert_eq!((train.n, val.n), (14, 6));
        assert_eq!(ds.split(6, 7), (train.clone(), val.clone()));
        assert_ne!(ds.split(6, 8).1, val);
        // Each image (identified by its first pixel) lands in exactly one part.
        let mut firsts: Vec<usize> = train
            .images
            .chunks(2)
            .chain(val.images.chunks(2))
            .map(|im| im[0] as usize / 2)
            .collect();
        firsts.sort_unstable();
        assert_eq!(firsts, (0..20).collect::<Vec<_>>());
    }
}
