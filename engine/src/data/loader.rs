//! A seeded, shuffling, endless batch loader that builds the next batches on a background thread
//! while the model trains on the current one.
//!
//! Nothing depends on how far the loader has run: epoch `e` is ordered by a permutation seeded
//! from (seed, e) and batch `b` of it is built with an RNG seeded from (seed, e, b). So a run
//! restarted with [`Loader::starting_at`] sees exactly the batches the original run would have.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::SeededRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::augment::{Augment, Image};
use super::dataset::Dataset;

/// Builds one batch from the dataset images at the given indices, drawing randomness from the RNG.
pub type BatchFn<B> = Arc<dyn Fn(&Dataset, &[usize], &mut SeededRng) -> B + Send + Sync>;

/// Batches prepared ahead of the consumer; two keep the model fed without hoarding memory.
const PREFETCH: usize = 2;

/// One batch and where it sits in the run.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch<B> {
    /// Epoch, counted from 0.
    pub epoch: usize,
    /// Batch number within the epoch, counted from 0.
    pub index: usize,
    /// What the batch function built.
    pub data: B,
}

/// An endless iterator of [`Batch`]es, epoch after epoch.
pub struct Loader<B: Send + 'static> {
    data: Arc<Dataset>,
    batch_size: usize,
    seed: u64,
    drop_last: bool,
    build: BatchFn<B>,
    start: (usize, usize),
    worker: Option<Worker<B>>,
}

struct Worker<B> {
    rx: Receiver<Batch<B>>,
    handle: JoinHandle<()>,
}

impl<B: Send + 'static> Loader<B> {
    /// A loader over `data` in batches of `batch_size`, shuffled by `seed`. With `drop_last` the
    /// final short batch of each epoch is skipped (every batch then has the same size).
    /// The background thread starts on the first call to `next`.
    #[track_caller]
    pub fn new(
        data: Arc<Dataset>,
        batch_size: usize,
        seed: u64,
        drop_last: bool,
        build: BatchFn<B>,
    ) -> Loader<B> {
        assert!(batch_size > 0, "batch size must be positive");
        let loader = Loader {
            data,
            batch_size,
            seed,
            drop_last,
            build,
            start: (0, 0),
            worker: None,
        };
        assert!(
            loader.batches_per_epoch() > 0,
            "{} images make no batch of {batch_size} (drop_last: {drop_last})",
            loader.data.n
        );
        loader
    }

    /// Restarts at batch `batch_in_epoch` of `epoch` (later epochs if it is past the end),
    /// yielding exactly what an uninterrupted loader would from there.
    pub fn starting_at(mut self, epoch: usize, batch_in_epoch: usize) -> Loader<B> {
        self.stop();
        let per_epoch = self.batches_per_epoch();
        self.start = (
            epoch + batch_in_epoch / per_epoch,
            batch_in_epoch % per_epoch,
        );
        self
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        if self.drop_last {
            self.data.n / self.batch_size
        } else {
            self.data.n.div_ceil(self.batch_size)
        }
    }

    fn spawn(&self) -> Worker<B> {
        let (tx, rx) = sync_channel(PREFETCH);
        let (data, build) = (Arc::clone(&self.data), Arc::clone(&self.build));
        let (batch_size, seed, per_epoch) = (self.batch_size, self.seed, self.batches_per_epoch());
        let (mut epoch, mut index) = self.start;
        let handle = std::thread::Builder::new()
            .name("selfsup-loader".into())
            .spawn(move || loop {
                let order = permutation(data.n, seed, epoch);
                while index < per_epoch {
                    let start = index * batch_size;
                    let idx = &order[start..(start + batch_size).min(data.n)];
                    let mut rng = SeededRng::seed_from_u64(derive(seed, epoch, index as u64 + 1));
                    let batch = Batch {
                        epoch,
                        index,
                        data: build(&data, idx, &mut rng),
                    };
                    // The receiver is gone: the loader was dropped or restarted.
                    if tx.send(batch).is_err() {
                        return;
                    }
                    index += 1;
                }
                (epoch, index) = (epoch + 1, 0);
            })
            .expect("failed to spawn the data loader thread");
        Worker { rx, handle }
    }

    /// Ends the background thread: dropping the receiver fails its next send, so it exits after
    /// finishing the batch in hand.
    fn stop(&mut self) {
        if let Some(Worker { rx, handle }) = self.worker.take() {
            drop(rx);
            // A panic in the batch function was already reported by the thread itself.
            let _ = handle.join();
        }
    }
}

impl<B: Send + 'static> Iterator for Loader<B> {
    type Item = Batch<B>;

    fn next(&mut self) -> Option<Batch<B>> {
        if self.worker.is_none() {
            self.worker = Some(self.spawn());
        }
        let worker = self.worker.as_ref()?;
        match worker.rx.recv() {
            Ok(batch) => Some(batch),
            // The thread only hangs up early by panicking in the batch function: pass it on.
            Err(_) => {
                let Worker { handle, .. } = self.worker.take()?;
                match handle.join() {
                    Err(panic) => std::panic::resume_unwind(panic),
                    Ok(()) => None,
                }
            }
        }
    }
}

impl<B: Send + 'static> Drop for Loader<B> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Mixes 64 bits (SplitMix64's finaliser), so nearby seeds give unrelated streams.
fn mix(z: u64) -> u64 {
    let z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Seed of stream `stream` in `epoch`: 0 orders the epoch, `b + 1` builds batch `b`.
fn derive(seed: u64, epoch: usize, stream: u64) -> u64 {
    mix(mix(mix(seed) ^ epoch as u64) ^ stream)
}

/// The order in which `epoch` visits `n` images.
fn permutation(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut SeededRng::seed_from_u64(derive(seed, epoch, 0)));
    order
}

/// Images of one view with their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelledBatch {
    /// `n × c × h × w` values.
    pub images: Vec<f32>,
    /// Label of each image.
    pub labels: Vec<u32>,
    /// Images in the batch.
    pub n: usize,
    /// Channels per image.
    pub c: usize,
    /// Image height.
    pub h: usize,
    /// Image width.
    pub w: usize,
}

/// One view of every image in a batch, `n × c × h × w` values.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    pub data: Vec<f32>,
    /// Channels, height and width of this view (views of one batch may differ in size).
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

/// Several augmented views of the same images: two for SimCLR or BYOL, 2 global + N local crops
/// for DINO.
#[derive(Clone, Debug, PartialEq)]
pub struct Views {
    /// View `v` of every image, in the order of the recipes.
    pub views: Vec<View>,
    /// Label of each image (for evaluation; self-supervised losses ignore it).
    pub labels: Vec<u32>,
    /// Images in the batch.
    pub n: usize,
}

/// A batch function that applies `aug` to each image (an empty [`Augment`] gives the images as
/// they are, for evaluation). Panics if the augmented images differ in shape.
pub fn one_view(aug: Augment) -> BatchFn<LabelledBatch> {
    Arc::new(move |ds: &Dataset, idx: &[usize], rng: &mut SeededRng| {
        let (images, labels, (c, h, w)) = views(ds, idx, |img| into_parts(aug.apply(img, rng)));
        LabelledBatch {
            images: images.concat(),
            labels,
            n: idx.len(),
            c,
            h,
            w,
        }
    })
}

/// A batch function producing one view of each image per recipe in `augs`, all drawn from the
/// same source image. Panics if one recipe gives images of different sizes.
pub fn n_views(augs: Vec<Augment>) -> BatchFn<Views> {
    Arc::new(move |ds: &Dataset, idx: &[usize], rng: &mut SeededRng| {
        let mut views: Vec<View> = augs
            .iter()
            .map(|_| View {
                data: Vec::new(),
                c: 0,
                h: 0,
                w: 0,
            })
            .collect();
        let mut labels = Vec::with_capacity(idx.len());
        for &i in idx {
            let img = Image::new(ds.c, ds.h, ds.w, ds.image(i).to_vec());
            for (aug, view) in augs.iter().zip(&mut views) {
                let out = aug.apply(&img, rng);
                if view.data.is_empty() {
                    (view.c, view.h, view.w) = (out.c, out.h, out.w);
                }
                assert_eq!(
                    (out.c, out.h, out.w),
                    (view.c, view.h, view.w),
                    "one recipe gave views of different sizes"
                );
                view.data.extend_from_slice(&out.data);
            }
            labels.push(ds.labels[i]);
        }
        Views {
            views,
            labels,
            n: idx.len(),
        }
    })
}

type Shape = (usize, usize, usize);

fn into_parts(img: Image) -> (Vec<f32>, Shape) {
    (img.data, (img.c, img.h, img.w))
}

/// Runs `make` on each selected image, checking every result has one shape (the first one's;
/// the dataset's if `idx` is empty).
fn views<T>(
    ds: &Dataset,
    idx: &[usize],
    mut make: impl FnMut(&Image) -> (T, Shape),
) -> (Vec<T>, Vec<u32>, Shape) {
    let mut shape = None;
    let mut out = Vec::with_capacity(idx.len());
    for &i in idx {
        let (value, s) = make(&Image::new(ds.c, ds.h, ds.w, ds.image(i).to_vec()));
        assert_eq!(
            *shape.get_or_insert(s),
            s,
            "augmented images differ in shape"
        );
        out.push(value);
    }
    let labels = idx.iter().map(|&i| ds.labels[i]).collect();
    (out, labels, shape.unwrap_or((ds.c, ds.h, ds.w)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Transform;
    use rand::Rng;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Image `i` is a single pixel holding `i`, so batches reveal their indices.
    fn numbered(n: usize) -> Arc<Dataset> {
        Arc::new(Dataset {
            images: (0..n).map(|i| i as f32).collect(),
            labels: (0..n as u32).collect(),
            n,
            c: 1,
            h: 1,
            w: 1,
            classes: n,
        })
    }

    /// Batch function returning the indices and one draw from the batch RNG.
    fn probe() -> BatchFn<(Vec<usize>, u64)> {
        Arc::new(|_: &Dataset, idx: &[usize], rng: &mut SeededRng| (idx.to_vec(), rng.random()))
    }

    fn take(loader: Loader<(Vec<usize>, u64)>, k: usize) -> Vec<Batch<(Vec<usize>, u64)>> {
        loader.take(k).collect()
    }

    #[test]
    fn same_seed_same_sequence_and_each_index_once_per_epoch() {
        let data = numbered(10);
        let a = take(Loader::new(data.clone(), 3, 42, false, probe()), 12);
        let b = take(Loader::new(data.clone(), 3, 42, false, probe()), 12);
        assert_eq!(a, b);
        let c = take(Loader::new(data, 3, 43, false, probe()), 12);
        assert_ne!(a, c);
        // 4 batches per epoch (3, 3, 3, 1), three epochs.
        let positions: Vec<(usize, usize)> = a.iter().map(|b| (b.epoch, b.index)).collect();
        let expect: Vec<(usize, usize)> =
            (0..3).flat_map(|e| (0..4).map(move |i| (e, i))).collect();
        assert_eq!(positions, expect);
        let mut orders = Vec::new();
        for epoch in a.chunks(4) {
            let order: Vec<usize> = epoch.iter().flat_map(|b| b.data.0.clone()).collect();
            assert_eq!(epoch.last().unwrap().data.0.len(), 1);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..10).collect::<Vec<_>>());
            orders.push(order);
        }
        assert_ne!(orders[0], orders[1]);
        assert_ne!(orders[1], orders[2]);
    }

    #[test]
    fn drop_last_skips_the_short_batch() {
        let loader = Loader::new(numbered(10), 3, 1, true, probe());
        assert_eq!(loader.batches_per_epoch(), 3);
        let batches = take(loader, 6);
        assert!(batches.iter().all(|b| b.data.0.len() == 3));
        assert_eq!(batches[3].epoch, 1);
        assert_eq!(batches[3].index, 0);
        assert_eq!(
            Loader::new(numbered(9), 3, 1, false, probe()).batches_per_epoch(),
            3
        );
    }

    #[test]
    #[should_panic(expected = "make no batch")]
    fn too_few_images_for_drop_last_panics() {
        Loader::new(numbered(2), 3, 1, true, probe());
    }

    #[test]
    fn resuming_matches_the_uninterrupted_run() {
        let data = numbered(11);
        let full = take(Loader::new(data.clone(), 4, 7, false, probe()), 10);
        for (epoch, index, skip) in [(0, 0, 0), (0, 2, 2), (1, 1, 4), (2, 0, 6), (0, 7, 7)] {
            let resumed = Loader::new(data.clone(), 4, 7, false, probe()).starting_at(epoch, index);
            assert_eq!(
                take(resumed, 10 - skip),
                full[skip..],
                "from ({epoch}, {index})"
            );
        }
        // Restarting a loader that already ran also works.
        let mut loader = Loader::new(data, 4, 7, false, probe());
        loader.next();
        assert_eq!(take(loader.starting_at(1, 0), 3), full[3..6]);
    }

    #[test]
    fn dropping_mid_epoch_stops_the_thread() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let build: BatchFn<usize> =
            Arc::new(move |_: &Dataset, idx: &[usize], _: &mut SeededRng| {
                counter.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(5));
                idx.len()
            });
        let mut loader = Loader::new(numbered(1000), 2, 0, false, build);
        assert_eq!(loader.next().unwrap().data, 2);
        drop(loader);
        // The thread has been joined: no more batches get built.
        let after = calls.load(Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert_eq!(calls.load(Ordering::SeqCst), after);
        assert!(after <= 1 + PREFETCH + 1, "{after} batches built");
    }

    #[test]
    #[should_panic(expected = "bad batch")]
    fn a_panicking_batch_function_surfaces_in_next() {
        let build: BatchFn<()> = Arc::new(|_: &Dataset, _: &[usize], _: &mut SeededRng| {
            panic!("bad batch");
        });
        Loader::new(numbered(4), 2, 0, false, build).next();
    }

    #[test]
    fn view_batches_have_shapes_labels_and_seeded_views() {
        let data = Arc::new(Dataset {
            images: (0..6 * 48).map(|i| (i % 17) as f32 / 16.0).collect(),
            labels: vec![5, 4, 3, 2, 1, 0],
            n: 6,
            c: 3,
            h: 4,
            w: 4,
            classes: 6,
        });
        let plain = Loader::new(data.clone(), 4, 3, false, one_view(Augment::new()))
            .next()
            .unwrap()
            .data;
        assert_eq!((plain.n, plain.c, plain.h, plain.w), (4, 3, 4, 4));
        assert_eq!(plain.images.len(), 4 * 48);
        for (k, &label) in plain.labels.iter().enumerate() {
            let i = 5 - label as usize;
            assert_eq!(&plain.images[k * 48..(k + 1) * 48], data.image(i));
        }
        let crop = |size| {
            Augment::new().then(Transform::RandomResizedCrop {
                size: (size, size),
                scale: (0.3, 1.0),
                ratio: (1.0, 1.0),
            })
        };
        let multi = || {
            Loader::new(
                data.clone(),
                4,
                3,
                false,
                n_views(vec![crop(2), crop(2), crop(3)]),
            )
        };
        let batch = multi().next().unwrap().data;
        assert_eq!(batch.n, 4);
        let sizes: Vec<_> = batch.views.iter().map(|v| (v.c, v.h, v.w)).collect();
        assert_eq!(sizes, [(3, 2, 2), (3, 2, 2), (3, 3, 3)]);
        assert_eq!(batch.views[0].data.len(), 4 * 12);
        assert_eq!(batch.views[2].data.len(), 4 * 27);
        assert_eq!(batch.labels, plain.labels);
        assert_ne!(batch.views[0], batch.views[1]);
        // Seeded by (seed, epoch, batch): a second loader gives the same views.
        assert_eq!(multi().next().unwrap().data, batch);
    }
}
