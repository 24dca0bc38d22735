//! MAE's masking: what it keeps, that it differs per image and per step but not per run, and
//! that the decoder's unshuffle puts every token back where its patch was.

use selfsup_engine::nn::Init;
use selfsup_engine::{Device, Tensor};
use selfsup_models::mae::{unpatchify, Mae, MaeConfig, Masking};
use selfsup_models::method::Method;
use selfsup_models::views::{Recipe, ViewsConfig};
use selfsup_models::vit::{patchify, Pool, VitConfig};

fn mae(seed: u64) -> Mae {
    let vit = VitConfig {
        image: 16,
        channels: 1,
        patch: 4,
        dim: 16,
        depth: 1,
        heads: 2,
        mlp_ratio: 2,
        pool: Pool::Mean,
        stem: Default::default(),
    };
    let views = ViewsConfig {
        recipe: Recipe::Digits,
        crop_min: 0.4,
        asymmetric: true,
    };
    let config = MaeConfig {
        decoder_dim: 8,
        decoder_depth: 1,
        decoder_heads: 2,
        ..MaeConfig::default()
    };
    Mae::new(&mut Init::new(seed, &Device::cpu()), vit, views, config)
}

#[test]
fn masking_keeps_a_quarter_of_each_image_and_differs_per_image_and_step() {
    let model = mae(0);
    let m = model.masking(8, 5);
    assert_eq!(m.k, 4, "16 patches at 75 % keep 4");
    assert_eq!(m.keep.len(), 8 * 4);
    assert_eq!(m.mask.iter().filter(|&&h| h == 1.0).count(), 8 * 12);
    for (i, kept) in m.keep.chunks(4).enumerate() {
        let mut sorted = kept.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 4, "image {i} keeps a patch twice: {kept:?}");
        for &p in kept {
            assert_eq!(
                m.mask[i * 16 + p as usize],
                0.0,
                "kept patch {p} marked hidden"
            );
        }
    }
    let sets: Vec<Vec<u32>> = m.keep.chunks(4).map(|c| c.to_vec()).collect();
    assert!(
        sets.windows(2).any(|w| w[0] != w[1]),
        "every image got the same mask"
    );
    assert_eq!(
        model.masking(8, 5),
        m,
        "the same step must give the same masks"
    );
    assert_ne!(model.masking(8, 6), m, "another step must give other masks");
    assert_eq!(
        mae(0).masking(8, 5),
        m,
        "the same seed must give the same masks"
    );
    assert_ne!(
        mae(1).masking(8, 5),
        m,
        "another seed must give other masks"
    );
}

#[test]
fn masking_follows_the_argsort_of_the_noise_and_the_unshuffle_inverts_it() {
    // Two images of four patches, keeping two: image 0 keeps 2 then 0, image 1 keeps 1 then 3.
    let noise = [0.5, 0.9, 0.1, 0.7, 0.8, 0.0, 0.9, 0.2];
    let m = Masking::from_noise(&noise, 4, 2);
    assert_eq!(m.keep, [2, 0, 1, 3]);
    assert_eq!(m.mask, [0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0]);
    // The patch each row of the decoder's table holds: [visible (image 0: 2, 0; image 1: 1, 3);
    // hidden (image 0: 3, 1; image 1: 0, 2)], each image's in noise order.
    let table = [2, 0, 1, 3, 3, 1, 0, 2];
    // The unshuffle must bring every image's patch p back to position p.
    let restored: Vec<u32> = m.restore.iter().map(|&r| table[r as usize]).collect();
    assert_eq!(restored, [0, 1, 2, 3, 0, 1, 2, 3]);
}

#[test]
fn unpatchify_inverts_patchify() {
    let cpu = Device::cpu();
    let x = Tensor::randn(&[2, 3, 8, 8], 3, &cpu);
    assert_eq!(unpatchify(&patchify(&x, 4), 4, 3, 8).to_vec(), x.to_vec());
}

#[test]
fn reconstructions_keep_the_visible_patches_and_grey_the_hidden_ones() {
    let model = mae(0);
    let images = Tensor::rand(&[2, 1, 16, 16], 9, &Device::cpu());
    let [masked, predicted, pasted] = model
        .reconstructions(&images, 3)
        .expect("MAE draws reconstructions");
    let m = model.masking(2, 3);
    let (px, masked, pasted) = (
        patchify(&images, 4).to_vec(),
        patchify(&masked, 4).to_vec(),
        patchify(&pasted, 4).to_vec(),
    );
    for (i, &hidden) in m.mask.iter().enumerate() {
        let patch = i * 16..(i + 1) * 16;
        if hidden == 1.0 {
            assert!(
                masked[patch].iter().all(|&v| v == 0.5),
                "patch {i} not grey"
            );
        } else {
            assert_eq!(
                masked[patch.clone()],
                px[patch.clone()],
                "patch {i} changed"
            );
            assert_eq!(
                pasted[patch.clone()],
                px[patch],
                "patch {i} not pasted back"
            );
        }
    }
    assert_eq!(predicted.shape(), &[2, 1, 16, 16]);
}
