//! Semantics against PyTorch: fixtures written by `tools/make_fixtures.py` (run by hand) hold
//! a reference model's weights, inputs, outputs and gradients; the same computation here must
//! reproduce them. CI needs no PyTorch, only the committed fixture files.

mod common;

use selfsup_engine::checkpoint::{self, Checkpoint};
use selfsup_engine::nn::{Init, Module};
use selfsup_engine::{Device, Tensor};
use selfsup_models::barlow::barlow_loss;
use selfsup_models::bart::{Bart, BartConfig};
use selfsup_models::bert::{self, BertConfig, BertMlm};
use selfsup_models::byol::regression_loss;
use selfsup_models::clip::clip_loss;
use selfsup_models::dino::{dino_loss, sinkhorn_knopp};
use selfsup_models::gpt::{Gpt, GptConfig};
use selfsup_models::mae::{Mae, MaeConfig, Masking};
use selfsup_models::moco_v2::info_nce;
use selfsup_models::moco_v3::ctr;
use selfsup_models::simclr::nt_xent;
use selfsup_models::simsiam::simsiam_loss;
use selfsup_models::views::{Recipe, ViewsConfig};
use selfsup_models::vit::{Pool, VisionTransformer, VitConfig};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> (Checkpoint, PathBuf) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    (
        checkpoint::load(&path)
            .unwrap_or_else(|e| panic!("{e} (regenerate with tools/make_fixtures.py)")),
        path,
    )
}

/// Asserts |a - b| ≤ atol + rtol·|b| element-wise, naming the tensor and the worst element.
fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} values, PyTorch has {}",
        got.len(),
        want.len()
    );
    let (mut worst, mut at) = (0.0f32, 0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let excess = (g - w).abs() - (atol + rtol * w.abs());
        // NaN must fail: no comparison would call it too large.
        if excess.is_nan() || excess > worst {
            (worst, at) = (
                if excess.is_nan() {
                    f32::INFINITY
                } else {
                    excess
                },
                i,
            );
        }
    }
    assert!(
        worst <= 0.0,
        "{what}: element {at} is {} but PyTorch gives {}",
        got[at],
        want[at]
    );
}

/// Every parameter's gradient against the fixture's `grad.{name}`.
fn assert_param_grads(ck: &Checkpoint, params: Vec<(String, Tensor)>, atol: f32, rtol: f32) {
    for (name, p) in params {
        assert_close(
            &format!("grad {name}"),
            &p.grad().unwrap().to_vec(),
            &ck.tensors[&format!("grad.{name}")].to_vec(),
            atol,
            rtol,
        );
    }
}

/// The ViT a fixture's metadata describes (an MLP ratio of 4 where it names none).
fn vit_config(ck: &Checkpoint, path: &Path) -> VitConfig {
    let meta = |k: &str| ck.meta(k, path).ok().map(|v| v.parse::<usize>().unwrap());
    let need = |k: &str| meta(k).unwrap_or_else(|| panic!("{}: no {k}", path.display()));
    VitConfig {
        image: need("image"),
        channels: need("channels"),
        patch: need("patch"),
        dim: need("dim"),
        depth: need("depth"),
        heads: need("heads"),
        mlp_ratio: meta("mlp_ratio").unwrap_or(4),
        pool: Pool::Cls,
        stem: Default::default(),
    }
}

/// The fixture and a ViT on `device` of its configuration, holding its weights.
fn fixture_vit(device: &Device) -> (Checkpoint, VisionTransformer) {
    let (ck, path) = fixture("vit_tiny.safetensors");
    let vit = VisionTransformer::new(&mut Init::new(0, device), vit_config(&ck, &path));
    vit.load_state_dict(&ck.with_prefix("param"), "fixture")
        .unwrap();
    (ck, vit)
}

#[test]
fn vit_forward_and_parameter_gradients_match_pytorch() {
    let (ck, vit) = fixture_vit(&Device::cpu());
    let x = ck.tensors["input"].clone().requires_grad_(true);
    let tokens = vit.tokens(&x);
    assert_close(
        "tokens",
        &tokens.to_vec(),
        &ck.tensors["output"].to_vec(),
        1e-5,
        1e-4,
    );
    (&tokens * &ck.tensors["w"]).sum_all().backward();
    assert_close(
        "grad input",
        &x.grad().unwrap().to_vec(),
        &ck.tensors["grad.input"].to_vec(),
        1e-6,
        1e-3,
    );
    let params = vit.named_parameters();
    assert_eq!(
        params.len(),
        ck.with_prefix("grad").len() - 1,
        "parameter sets differ from PyTorch's"
    );
    assert_param_grads(&ck, params, 1e-5, 1e-3);
}

#[test]
fn nt_xent_value_and_gradients_match_pytorch() {
    let (ck, _) = fixture("nt_xent.safetensors");
    for i in 0..2 {
        let t = |k: &str| ck.tensors[&format!("{i}.{k}")].clone();
        let (z1, z2) = (t("z1").requires_grad_(true), t("z2").requires_grad_(true));
        let loss = nt_xent(&z1, &z2, t("tau").item() as f64);
        assert_close("loss", &[loss.item()], &t("loss").to_vec(), 1e-6, 1e-5);
        loss.backward();
        assert_close(
            "grad z1",
            &z1.grad().unwrap().to_vec(),
            &t("grad.z1").to_vec(),
            1e-6,
            1e-4,
        );
        assert_close(
            "grad z2",
            &z2.grad().unwrap().to_vec(),
            &t("grad.z2").to_vec(),
            1e-6,
            1e-4,
        );
    }
}

/// The same model on the GPU: forward and gradients agree with PyTorch too.
#[test]
fn vit_on_the_gpu_matches_pytorch() {
    let Some(gpu) = common::gpu_or_skip("vit_on_the_gpu_matches_pytorch") else {
        return;
    };
    let (ck, vit) = fixture_vit(&gpu);
    let x = ck.tensors["input"].to_device(&gpu);
    let tokens = vit.tokens(&x);
    assert_close(
        "tokens",
        &tokens.to_vec(),
        &ck.tensors["output"].to_vec(),
        1e-4,
        1e-3,
    );
    (&tokens * &ck.tensors["w"].to_device(&gpu))
        .sum_all()
        .backward();
    assert_param_grads(&ck, vit.named_parameters(), 1e-4, 2e-3);
}

/// The tiny GPT fixture's logits, loss and every parameter gradient, on `device`.
fn check_gpt(device: &Device) {
    let (ck, path) = fixture("gpt_tiny.safetensors");
    let meta = |k: &str| ck.meta(k, &path).unwrap().parse::<usize>().unwrap();
    let config = GptConfig {
        vocab: meta("vocab"),
        ctx: meta("ctx"),
        dim: meta("dim"),
        depth: meta("depth"),
        heads: meta("heads"),
        dropout: 0.0,
    };
    let gpt = Gpt::new(&mut Init::new(0, device), config);
    gpt.load_state_dict(&ck.with_prefix("param"), "fixture")
        .unwrap();
    let ids: Vec<u32> = ck.tensors["ids"]
        .to_vec()
        .iter()
        .map(|&v| v as u32)
        .collect();
    let targets: Vec<i64> = ck.tensors["targets"]
        .to_vec()
        .iter()
        .map(|&v| v as i64)
        .collect();
    let logits = gpt.forward(&ids, 3);
    assert_close(
        "logits",
        &logits.to_vec(),
        &ck.tensors["logits"].to_vec(),
        1e-4,
        1e-3,
    );
    let loss = logits.cross_entropy(&targets, -1, 0.0);
    assert_close(
        "loss",
        &loss.to_vec(),
        &ck.tensors["loss"].to_vec(),
        1e-5,
        1e-5,
    );
    loss.backward();
    let params = gpt.named_parameters();
    assert_eq!(
        params.len(),
        ck.with_prefix("grad").len(),
        "one gradient per parameter"
    );
    assert_param_grads(&ck, params, 1e-5, 2e-3);
}

#[test]
fn gpt_logits_loss_and_gradients_match_pytorch() {
    check_gpt(&Device::cpu());
}

#[test]
fn gpt_on_the_gpu_matches_pytorch() {
    if let Some(gpu) = common::gpu_or_skip("gpt_on_the_gpu_matches_pytorch") {
        check_gpt(&gpu);
    }
}

/// A tiny BERT for MLM loaded from Hugging Face parameter names (query, key and value stacked
/// into our packed projection): hidden states with padding, the loss on chosen positions, and
/// every gradient, against transformers' layout in PyTorch; then the same with the bert job's
/// contrastive term added.
#[test]
fn bert_hidden_states_mlm_loss_and_gradients_match_pytorch() {
    check_bert(&Device::cpu());
}

#[test]
fn bert_on_the_gpu_matches_pytorch() {
    if let Some(gpu) = common::gpu_or_skip("bert_on_the_gpu_matches_pytorch") {
        check_bert(&gpu);
    }
}

fn check_bert(device: &Device) {
    let (ck, path) = fixture("bert_tiny.safetensors");
    let meta = |k: &str| ck.meta(k, &path).unwrap().parse::<usize>().unwrap();
    let config = BertConfig {
        vocab: meta("vocab"),
        max_positions: meta("max_pos"),
        type_vocab: meta("types"),
        dim: meta("dim"),
        depth: meta("depth"),
        heads: meta("heads"),
        intermediate: meta("inter"),
        dropout: 0.0,
        ln_eps: 1e-12,
    };
    let model = BertMlm::new(&mut Init::new(0, device), config);
    let ours = bert::from_hf(&model, &ck.with_prefix("param"), "fixture").unwrap();
    model.load_state_dict(&ours, "fixture").unwrap();
    let ints = |k: &str| -> Vec<f32> { ck.tensors[k].to_vec() };
    let lens: Vec<usize> = ints("lens").iter().map(|&v| v as usize).collect();
    let t = ck.tensors["ids"].shape()[1];
    let batch = bert::Batch {
        ids: ints("ids").iter().map(|&v| v as u32).collect(),
        types: ints("types").iter().map(|&v| v as u32).collect(),
        lens,
        t,
    };
    let targets: Vec<i64> = ints("targets").iter().map(|&v| v as i64).collect();
    assert_close(
        "hidden",
        &model.bert.forward(&batch).to_vec(),
        &ck.tensors["hidden"].to_vec(),
        1e-4,
        1e-3,
    );
    let loss = model.loss(&batch, &targets);
    assert_close(
        "loss",
        &loss.to_vec(),
        &ck.tensors["loss"].to_vec(),
        1e-5,
        1e-5,
    );
    loss.backward();
    let check_grads = |prefix: &str| {
        let want = bert::from_hf(&model, &ck.with_prefix(prefix), "fixture").unwrap();
        for (name, p) in model.named_parameters() {
            assert_close(
                &format!("{prefix} {name}"),
                &p.grad().expect("a gradient").to_vec(),
                &want[&name].to_vec(),
                1e-5,
                2e-3,
            );
        }
    };
    check_grads("grad");
    // The bert job's --contrast objective on the same batch: rows i and B/2 + i as pairs.
    let meta_f = |k: &str| ck.meta(k, &path).unwrap().parse::<f64>().unwrap();
    for p in model.parameters() {
        p.zero_grad();
    }
    let loss = model.loss_with_contrast(
        &batch,
        &targets,
        meta_f("contrast_weight"),
        meta_f("contrast_tau"),
    );
    assert_close(
        "contrast loss",
        &loss.to_vec(),
        &ck.tensors["contrast_loss"].to_vec(),
        1e-5,
        1e-5,
    );
    loss.backward();
    check_grads("cgrad");
}

/// A tiny BART: encoder over padded sources, causal decoder with cross-attention, tied output
/// with its bias; the teacher-forced loss and every gradient against PyTorch.
#[test]
fn bart_loss_and_gradients_match_pytorch() {
    let (ck, path) = fixture("bart_tiny.safetensors");
    let meta = |k: &str| ck.meta(k, &path).unwrap().parse::<usize>().unwrap();
    let config = BartConfig {
        vocab: meta("vocab"),
        max_positions: meta("max_pos"),
        dim: meta("dim"),
        encoder_depth: meta("encoder_depth"),
        decoder_depth: meta("decoder_depth"),
        heads: meta("heads"),
        ffn: meta("ffn"),
        dropout: 0.0,
    };
    let model = Bart::new(&mut Init::new(0, &Device::cpu()), config);
    model
        .load_state_dict(&ck.with_prefix("param"), "fixture")
        .unwrap();
    let floats = |k: &str| ck.tensors[k].to_vec();
    let batch = |ids: &str, lens: &str| bert::Batch {
        ids: floats(ids).iter().map(|&v| v as u32).collect(),
        types: vec![0; ck.tensors[ids].numel()],
        lens: floats(lens).iter().map(|&v| v as usize).collect(),
        t: ck.tensors[ids].shape()[1],
    };
    let targets: Vec<i64> = floats("targets").iter().map(|&v| v as i64).collect();
    let loss = model.loss(
        &batch("src", "src_lens"),
        &batch("tgt", "tgt_lens"),
        &targets,
    );
    assert_close("loss", &loss.to_vec(), &floats("loss"), 1e-5, 1e-5);
    loss.backward();
    let params = model.named_parameters();
    assert_eq!(params.len(), ck.with_prefix("grad").len());
    assert_param_grads(&ck, params, 1e-5, 2e-3);
}

#[test]
fn nt_xent_matches_a_hand_computed_value() {
    // Two views of two points, τ = 1: anchors see cos = 1 to their partner and 0 to the other
    // two views, so each row's loss is log(e + 2) - 1.
    let cpu = Device::cpu();
    let z1 = Tensor::from_vec(vec![1.0, 0.0, 0.0, 2.0], &[2, 2], &cpu);
    let z2 = Tensor::from_vec(vec![3.0, 0.0, 0.0, 0.5], &[2, 2], &cpu);
    let want = (std::f64::consts::E + 2.0).ln() - 1.0;
    assert!((nt_xent(&z1, &z2, 1.0).item() as f64 - want).abs() < 1e-6);
}

#[test]
#[should_panic(expected = "is NaN but PyTorch gives 1")]
fn the_fixture_comparison_fails_on_nan() {
    assert_close("nan", &[1.0, f32::NAN], &[1.0, 1.0], 1e-3, 1e-3);
}

/// Checks `loss` and the gradient of each named input against the `ssl_losses` fixture.
fn check_loss(case: &str, inputs: &[&str], grads: &[&str], loss: impl Fn(&[Tensor]) -> Tensor) {
    check_loss_in("ssl_losses.safetensors", case, inputs, grads, loss)
}

/// [`check_loss`] for case `case` of fixture `file`.
fn check_loss_in(
    file: &str,
    case: &str,
    inputs: &[&str],
    grads: &[&str],
    loss: impl Fn(&[Tensor]) -> Tensor,
) {
    let (ck, _) = fixture(file);
    let t = |k: &str| ck.tensors[&format!("{case}.{k}")].clone();
    let xs: Vec<Tensor> = inputs.iter().map(|k| t(k).requires_grad_(true)).collect();
    let l = loss(&xs);
    assert_close(
        &format!("{case} loss"),
        &[l.item()],
        &t("loss").to_vec(),
        1e-5,
        1e-5,
    );
    l.backward();
    for g in grads {
        let i = inputs.iter().position(|k| k == g).unwrap();
        assert_close(
            &format!("{case} grad {g}"),
            &xs[i].grad().expect("a gradient").to_vec(),
            &t(&format!("grad.{g}")).to_vec(),
            1e-6,
            1e-4,
        );
    }
}

#[test]
fn byol_loss_and_gradients_match_pytorch() {
    check_loss("byol", &["p1", "p2", "z1", "z2"], &["p1", "p2"], |x| {
        &regression_loss(&x[0], &x[3]) + &regression_loss(&x[1], &x[2])
    });
}

#[test]
fn simsiam_loss_and_gradients_match_pytorch() {
    check_loss("simsiam", &["p1", "p2", "z1", "z2"], &["p1", "p2"], |x| {
        simsiam_loss(&x[0], &x[1], &x[2], &x[3])
    });
}

#[test]
fn moco_v2_info_nce_and_gradients_match_pytorch() {
    let (ck, _) = fixture("ssl_losses.safetensors");
    let queue = ck.tensors["moco_v2.queue"].clone();
    check_loss("moco_v2", &["q", "k"], &["q"], |x| {
        info_nce(&x[0], &x[1], &queue, 0.2)
    });
}

#[test]
fn moco_v3_loss_and_gradients_match_pytorch() {
    check_loss("moco_v3", &["q1", "q2", "k1", "k2"], &["q1", "q2"], |x| {
        &ctr(&x[0], &x[3], 0.2) + &ctr(&x[1], &x[2], 0.2)
    });
}

#[test]
fn barlow_twins_loss_and_gradients_match_pytorch() {
    check_loss("barlow", &["z1", "z2"], &["z1", "z2"], |x| {
        barlow_loss(&x[0], &x[1], 0.0051)
    });
}

/// CLIP's symmetric loss at its initial logit scale and a sharper one, with the gradient of the
/// logit scale itself (the learnt temperature).
#[test]
fn clip_loss_and_gradients_match_pytorch() {
    for case in ["init", "sharp"] {
        let names = ["image", "text", "logit_scale"];
        check_loss_in("clip_loss.safetensors", case, &names, &names, |x| {
            clip_loss(&x[0], &x[1], &x[2])
        });
    }
}

/// DINOv2's Sinkhorn-Knopp centring of the teacher at a sharp and a soft temperature.
#[test]
fn sinkhorn_centring_matches_pytorch() {
    let (ck, _) = fixture("sinkhorn.safetensors");
    for (name, temp) in [("t04", 0.04), ("t10", 0.1)] {
        let q = sinkhorn_knopp(&ck.tensors["logits"], temp, 3);
        let want = &ck.tensors[&format!("q.{name}")];
        assert_close(
            &format!("q at τ {temp}"),
            &q.to_vec(),
            &want.to_vec(),
            1e-6,
            1e-4,
        );
        // exp(100 / 0.04) overflows f32: shifted logits must give the same assignments.
        let shifted = sinkhorn_knopp(&ck.tensors["logits"].add_scalar(100.0), temp, 3);
        assert_close("shifted", &shifted.to_vec(), &want.to_vec(), 1e-6, 1e-4);
    }
}

/// The tiny MAE fixture's masked-patch loss and every parameter gradient, with raw and with
/// per-patch normalised targets, under PyTorch's masking noise.
#[test]
fn mae_loss_and_gradients_match_pytorch() {
    let (ck, path) = fixture("mae_tiny.safetensors");
    let meta = |k: &str| ck.meta(k, &path).unwrap().parse::<usize>().unwrap();
    let vit = vit_config(&ck, &path);
    let views = ViewsConfig {
        recipe: Recipe::Digits,
        crop_min: 1.0,
        asymmetric: false,
    };
    let n = vit.patches();
    let noise = ck.tensors["noise"].to_vec();
    let masking = Masking::from_noise(&noise, n, meta("keep"));
    for (case, norm_pix_loss) in [("pix", false), ("norm", true)] {
        let config = MaeConfig {
            mask_ratio: 1.0 - meta("keep") as f64 / n as f64,
            decoder_dim: meta("dec_dim"),
            decoder_depth: meta("dec_depth"),
            decoder_heads: meta("dec_heads"),
            norm_pix_loss,
        };
        let mae = Mae::new(
            &mut Init::new(0, &Device::cpu()),
            vit.clone(),
            views.clone(),
            config,
        );
        mae.load_state_dict(&ck.with_prefix("param"), "fixture")
            .unwrap();
        let loss = mae.masked_loss(&ck.tensors["input"], &masking);
        assert_close(
            &format!("{case} loss"),
            &loss.to_vec(),
            &ck.tensors[&format!("{case}.loss")].to_vec(),
            1e-6,
            1e-5,
        );
        loss.backward();
        let params = mae.named_parameters();
        assert_eq!(
            params.len(),
            ck.with_prefix(&format!("{case}.grad")).len(),
            "one gradient per parameter"
        );
        let grads = ck.with_prefix(case);
        for (name, p) in params {
            assert_close(
                &format!("{case} grad {name}"),
                &p.grad().unwrap().to_vec(),
                &grads[&format!("grad.{name}")].to_vec(),
                1e-5,
                2e-3,
            );
        }
    }
}

/// Bicubic resizing matches `F.interpolate(mode="bicubic", align_corners=False)`, down and up.
#[test]
fn resize_bicubic_matches_pytorch() {
    let (ck, _) = fixture("resize.safetensors");
    let x = &ck.tensors["input"];
    for (h, w) in [(3, 3), (12, 12), (5, 9)] {
        assert_close(
            &format!("{h}×{w}"),
            &x.resize_bicubic(h, w).to_vec(),
            &ck.tensors[&format!("{h}x{w}")].to_vec(),
            1e-5,
            1e-5,
        );
    }
}

/// DINO's loss with a centred, sharpened teacher and a tempered student, its gradient, and the
/// centre's momentum update, against main_dino.py's DINOLoss.
#[test]
fn dino_loss_centring_and_gradients_match_pytorch() {
    let (ck, path) = fixture("dino_loss.safetensors");
    let meta = |k: &str| ck.meta(k, &path).unwrap().parse::<f64>().unwrap();
    let b = meta("batch") as usize;
    let (teacher, center) = (&ck.tensors["teacher"], &ck.tensors["center"]);
    let student = ck.tensors["student"].clone().requires_grad_(true);
    let q = (teacher - center)
        .mul_scalar(1.0 / meta("teacher_temp"))
        .softmax(-1);
    let loss = dino_loss(&student.mul_scalar(1.0 / meta("student_temp")), &q, b);
    assert_close(
        "loss",
        &loss.to_vec(),
        &ck.tensors["loss"].to_vec(),
        1e-5,
        1e-5,
    );
    loss.backward();
    assert_close(
        "grad student",
        &student.grad().unwrap().to_vec(),
        &ck.tensors["grad.student"].to_vec(),
        1e-6,
        1e-4,
    );
    let m = meta("center_momentum");
    let new_center = &center.mul_scalar(m) + &teacher.mean(0, true).mul_scalar(1.0 - m);
    assert_close(
        "centre",
        &new_center.to_vec(),
        &ck.tensors["new_center"].to_vec(),
        1e-6,
        1e-5,
    );
}
