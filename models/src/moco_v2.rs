//! MoCo v2 (Chen, Fan, Girshick & He, 2020; MoCo: He et al., 2020): a query encoder f_q and a
//! momentum key encoder f_k (θ_k ← m·θ_k + (1 − m)·θ_q, no gradient), with a queue of K keys from
//! earlier batches as the negatives, so their number is decoupled from the batch size.
//!
//! ℒ_q = −log( exp(q·k₊/τ) / (exp(q·k₊/τ) + Σᵢ₌₁ᴷ exp(q·kᵢ/τ)) ),  q, k L2-normalised
//!
//! The query sees view 1 and the key view 2, as in the paper; this batch's keys enter the queue
//! after the step, replacing the oldest.
//!
//! Shuffling BN: the head here is Linear → BatchNorm → ReLU → Linear. The paper's head has no
//! BatchNorm, but its ResNet has; a ViT has none, and without one the random encoder maps every
//! digit to nearly the same direction, so InfoNCE has no gradient to start from (measured: the
//! loss sits at log(K+1)). BatchNorm lets a batch's key statistics leak which key belongs to
//! which query, which MoCo prevents by shuffling keys across GPUs. On one device the same is
//! done with virtual devices: the key batch is shuffled (seeded by the step), normalised in
//! [`SHUFFLE_GROUPS`] separate groups, and unshuffled.

use crate::heads::{HeadNorm, MlpHead, Tower};
use crate::method::{momentum, require, temperature, width, Method, Progress};
use crate::views::ViewsConfig;
use crate::vit::{VisionTransformer, VitConfig};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use selfsup_engine::data::Augment;
use selfsup_engine::nn::{prefixed, Init, Module};
use selfsup_engine::{no_grad, SeededRng, Tensor};

/// Virtual devices of shuffled BN.
pub const SHUFFLE_GROUPS: usize = 4;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MocoV2Config {
    /// InfoNCE τ (paper: 0.2; 0.05–0.1 suited SimCLR at this batch size, see the README).
    pub temperature: f64,
    /// K keys in the queue; at most the number of training images, or the queue holds stale
    /// copies of the same images (paper: 65,536 of 1.28 M).
    pub queue: usize,
    /// Key-encoder momentum m (paper: 0.999 over 200 epochs; short runs need a faster key).
    pub tau: f64,
    pub proj_hidden: usize,
    pub proj_out: usize,
}

impl Default for MocoV2Config {
    fn default() -> Self {
        MocoV2Config {
            temperature: 0.1,
            queue: 4096,
            tau: 0.99,
            proj_hidden: 256,
            proj_out: 64,
        }
    }
}

impl MocoV2Config {
    pub fn validate(&self, train_images: usize) -> Result<(), String> {
        temperature(self.temperature)?;
        require(
            self.queue >= 1 && self.queue <= train_images,
            "queue",
            self.queue,
            &format!("between 1 and the {train_images} training images"),
        )?;
        momentum("tau", self.tau)?;
        width("proj_hidden", self.proj_hidden)?;
        width("proj_out", self.proj_out)
    }
}

/// InfoNCE of queries against their keys (positives) and a queue (negatives):
/// `(N, D), (N, D), (K, D) → ()`. q and k are normalised here; the queue holds normalised keys.
pub fn info_nce(q: &Tensor, k: &Tensor, queue: &Tensor, temperature: f64) -> Tensor {
    let q = q.normalize(1, 1e-12);
    let k = k.normalize(1, 1e-12).detach();
    let pos = (&q * &k).sum(1, true); // (N, 1)
    let neg = q.matmul_nt(queue); // (N, K)
    let logits = Tensor::cat(&[&pos, &neg], 1).mul_scalar(1.0 / temperature);
    let n = q.shape()[0];
    logits.cross_entropy(&vec![0; n], -100, 0.0)
}

pub struct MocoV2 {
    /// The query encoder and projector, trained.
    pub query: Tower,
    /// Their momentum copy, never trained.
    pub key: Tower,
    /// (K, D) normalised keys; row `ptr` is the oldest.
    pub queue: Tensor,
    /// Where the next keys go, as a (1,) tensor so it is checkpointed with the queue.
    pub ptr: Tensor,
    pub config: MocoV2Config,
    views: ViewsConfig,
    /// This step's keys, enqueued by `after_step`.
    pending: Option<Tensor>,
}

impl MocoV2 {
    pub fn new(
        init: &mut Init,
        vit: VitConfig,
        views: ViewsConfig,
        config: MocoV2Config,
    ) -> MocoV2 {
        let (dim, c) = (vit.dim, &config);
        let query = Tower {
            encoder: VisionTransformer::new(init, vit),
            projector: MlpHead::new(init, &[dim, c.proj_hidden, c.proj_out], HeadNorm::Hidden),
        };
        // The paper starts from random normalised keys.
        let queue = init
            .trunc_normal(&[c.queue, c.proj_out], 1.0)
            .normalize(1, 1e-12);
        MocoV2 {
            key: query.momentum_copy(),
            query,
            queue,
            ptr: init.zeros(&[1]),
            config,
            views,
            pending: None,
        }
    }

    /// Normalised keys `(N, D)` of `images`, batch norm computed over shuffled groups.
    fn shuffled_keys(&self, images: &Tensor, step: u64) -> Tensor {
        let n = images.shape()[0];
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.shuffle(&mut SeededRng::seed_from_u64(step));
        let mut back = vec![0u32; n];
        for (pos, &i) in order.iter().enumerate() {
            back[i as usize] = pos as u32;
        }
        let h = self.key.encoder.features(&images.index_select(0, &order)); // (N, dim), shuffled
        let groups = SHUFFLE_GROUPS.min(n);
        let parts: Vec<Tensor> = (0..groups)
            .map(|g| {
                let (start, end) = (g * n / groups, (g + 1) * n / groups);
                self.key.projector.forward(&h.narrow(0, start, end - start))
            })
            .collect();
        let refs: Vec<&Tensor> = parts.iter().collect();
        Tensor::cat(&refs, 0)
            .index_select(0, &back)
            .normalize(1, 1e-12)
    }

    /// Writes `keys` (N, D) over the oldest rows, wrapping around the end of the queue.
    pub fn enqueue(&self, keys: &Tensor) {
        let (k, n) = (self.config.queue, keys.shape()[0]);
        let n = n.min(k);
        let keys = keys.narrow(0, 0, n);
        let ptr = self.ptr.item() as usize;
        let head = n.min(k - ptr);
        let mut parts = Vec::new();
        // [0, ptr): kept, unless the write wrapped round into it.
        let wrapped = n - head;
        if wrapped > 0 {
            parts.push(keys.narrow(0, head, wrapped));
        }
        if ptr > wrapped {
            parts.push(self.queue.narrow(0, wrapped, ptr - wrapped));
        }
        parts.push(keys.narrow(0, 0, head));
        if ptr + head < k {
            parts.push(self.queue.narrow(0, ptr + head, k - ptr - head));
        }
        let refs: Vec<&Tensor> = parts.iter().collect();
        self.queue.set_data(&Tensor::cat(&refs, 0));
        let next = ((ptr + n) % k) as f32;
        self.ptr
            .set_data(&Tensor::from_vec(vec![next], &[1], &self.ptr.device()));
    }
}

impl Method for MocoV2 {
    fn views(&self) -> Vec<Augment> {
        self.views.pair(self.query.encoder.config.image)
    }

    fn loss(&mut self, views: &[Tensor], _: &[u32], at: Progress) -> Tensor {
        let q = self.query.forward(&views[0]); // (N, D)
        let k = no_grad(|| self.shuffled_keys(&views[1], at.step)); // (N, D)
        let loss = info_nce(&q, &k, &self.queue, self.config.temperature);
        self.pending = Some(k);
        loss
    }

    fn after_step(&mut self, _: Progress) {
        if let Some(k) = self.pending.take() {
            no_grad(|| self.enqueue(&k));
        }
        self.key.ema_from(&self.query, self.config.tau);
    }

    fn encoder(&self) -> &VisionTransformer {
        &self.query.encoder
    }
}

impl Module for MocoV2 {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("encoder".into(), &self.query.encoder),
            ("projector".into(), &self.query.projector),
        ]
    }

    /// Key encoder, queue and its pointer are state, not parameters.
    fn own_buffers(&self) -> Vec<(String, Tensor)> {
        let mut v = prefixed("key", self.key.state_dict());
        v.push(("queue".into(), self.queue.clone()));
        v.push(("queue_ptr".into(), self.ptr.clone()));
        v
    }
}
