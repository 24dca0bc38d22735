//! burn-wgpu's training step at the shape of selfsup's SimCLR step at batch 128 (`cargo bench
//! --bench step -- gpu/simclr/128`): 256 views of 50 tokens, patch embedding 16 → 64, 4 pre-LN
//! blocks of width 64 with 4 heads and a 256-wide GELU MLP, mean pooling, a squared-norm loss,
//! Adam. Lighter than ours (no class token, projection head or NT-Xent). Prints each step's
//! wall time; the first ones include burn's kernel compilation and autotuning.
use burn::module::Module;
use burn::nn::transformer::{TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor};
use std::time::Instant;

#[derive(Module, Debug)]
struct Vit {
    embed: Linear,
    encoder: TransformerEncoder,
}

fn main() {
    let device = Device::wgpu(Default::default()).autodiff();
    let views: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(256);
    let mut model = Vit {
        embed: LinearConfig::new(16, 64).init(&device),
        encoder: TransformerEncoderConfig::new(64, 256, 4, 4)
            .with_dropout(0.0)
            .with_norm_first(true)
            .init(&device),
    };
    let mut optim = AdamConfig::new().init();
    let patches: Tensor<3> = Tensor::random([views, 50, 16], Distribution::Default, &device);
    for step in 0..8 {
        let t = Instant::now();
        let x = model.embed.forward(patches.clone());
        let y = model.encoder.forward(TransformerEncoderInput::new(x));
        let pooled = y.mean_dim(1);
        let loss = (pooled.clone() * pooled).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
        let v: f32 = loss.into_scalar();
        println!("step {step}: {:.1} ms (loss {v:.4})", t.elapsed().as_secs_f64() * 1e3);
    }
}
