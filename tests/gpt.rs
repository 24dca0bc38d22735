//! GPT: causal masking, the KV cache, dropout modes, bit-identical resume, and the `gpt` job as a
//! user meets it (training, sampling, bad input, divergence) on the CPU and the GPU.

mod common;

use common::Scratch;
use selfsup::gpt::main_with;
use selfsup::text_run::{read_corpus, tokenize, GptRun, GptRunConfig};
use selfsup_engine::checkpoint;
use selfsup_engine::nn::{Init, Module};
use selfsup_engine::{no_grad, Device};
use selfsup_models::gpt::{Gpt, GptConfig, Sampler};
use std::path::{Path, PathBuf};

fn tiny(dropout: f64) -> Gpt {
    let config = GptConfig {
        vocab: 13,
        ctx: 10,
        dim: 16,
        depth: 2,
        heads: 2,
        dropout,
    };
    Gpt::new(&mut Init::new(3, &Device::cpu()), config)
}

fn ids(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i * 7 + seed * 5 + i * i) % 13)
        .collect()
}

#[test]
fn a_future_token_never_changes_a_past_logit() {
    let gpt = tiny(0.0);
    let x = ids(20, 1); // 2 rows of 10
    let mut y = x.clone();
    y[6] = (y[6] + 1) % 13; // row 0, position 6
    let (a, b) = no_grad(|| (gpt.forward(&x, 2).to_vec(), gpt.forward(&y, 2).to_vec()));
    let row = |v: &[f32], r: usize| v[r * 13..(r + 1) * 13].to_vec();
    for pos in 0..6 {
        assert_eq!(row(&a, pos), row(&b, pos), "position {pos} saw the future");
    }
    for pos in 6..10 {
        assert_ne!(row(&a, pos), row(&b, pos), "position {pos} ignores token 6");
    }
    for pos in 10..20 {
        assert_eq!(row(&a, pos), row(&b, pos), "row 1 saw row 0");
    }
}

#[test]
fn cached_logits_equal_a_full_forward() {
    let gpt = tiny(0.0);
    gpt.set_training(false);
    let x = ids(10, 2);
    let full = no_grad(|| gpt.forward(&x, 1)).to_vec();
    let mut cache = gpt.new_cache();
    let mut got = gpt.forward_cached(&x[..4], &mut cache).to_vec();
    for i in 4..10 {
        got.extend(gpt.forward_cached(&x[i..i + 1], &mut cache).to_vec());
    }
    assert_eq!(cache.len(), 10);
    assert_eq!(got.len(), full.len());
    for (i, (g, f)) in got.iter().zip(&full).enumerate() {
        assert!((g - f).abs() <= 1e-5, "logit {i}: cached {g}, full {f}");
    }
}

#[test]
fn sampling_with_and_without_the_cache_agrees_within_the_window() {
    let gpt = tiny(0.0);
    gpt.set_training(false);
    let prompt = ids(3, 4);
    let a = gpt.generate(&prompt, 7, &mut Sampler::new(1.0, None, 9), true);
    let b = gpt.generate(&prompt, 7, &mut Sampler::new(1.0, None, 9), false);
    assert_eq!(a, b);
    // Past the window the cache is rebuilt; every token is still a vocabulary entry.
    let long = gpt.generate(&prompt, 35, &mut Sampler::new(1.0, Some(3), 9), true);
    assert_eq!(long.len(), 35);
    assert!(long.iter().all(|&t| t < 13));
}

#[test]
fn top_k_one_is_greedy() {
    let mut s = Sampler::new(5.0, Some(1), 0);
    for _ in 0..20 {
        assert_eq!(s.sample(&[0.1, 2.0, 1.9, -3.0]), 1);
    }
}

#[test]
fn dropout_is_off_in_eval_and_seeded_in_training() {
    let gpt = tiny(0.5);
    let x = ids(10, 5);
    let run = |step: u64| {
        gpt.seek_dropout(step);
        no_grad(|| gpt.forward(&x, 1)).to_vec()
    };
    assert_eq!(run(3), run(3), "the masks of a step are fixed");
    assert_ne!(run(3), run(4));
    gpt.set_training(false);
    let eval = run(3);
    assert_eq!(eval, run(4), "no dropout in eval");
    gpt.set_training(true);
    assert_ne!(eval, run(3));
}

/// A small text with structure to learn.
fn text(dir: &Scratch) -> PathBuf {
    let path = dir.path("text.txt");
    let lines: String = (0..400)
        .map(|i| {
            format!(
                "the {} cat sat on the {} mat.\n",
                ["red", "big", "old"][i % 3],
                ["blue", "flat"][i % 2]
            )
        })
        .collect();
    std::fs::write(&path, lines).unwrap();
    path
}

fn argv(data: &Path, out: &Path, device: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "gpt",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        device,
        "--steps",
        "40",
        "--ctx",
        "16",
        "--dim",
        "32",
        "--depth",
        "1",
        "--heads",
        "2",
        "--batch",
        "8",
        "--warmup",
        "5",
        "--eval-every",
        "20",
        "--eval-batches",
        "2",
        "--tokens",
        "20",
        "--log-every",
        "0.5",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// Trains the small job on `device` and checks what it wrote and learnt.
fn trains_and_samples(device: &str, tag: &str) {
    let dir = Scratch::new(tag);
    let data = text(&dir);
    let out = dir.path("run");
    let got = main_with(argv(&data, &out, device, &["--prompt", "the "])).unwrap();
    assert_eq!(got.steps, 40);
    let vocab = 20.0f32; // the distinct characters of the text
    let val = got.val_loss.unwrap();
    assert!(
        val < 0.7 * vocab.ln(),
        "{device}: validation loss {val} learnt little"
    );
    assert!(got.sample.starts_with("the ") && got.sample.len() > 4);
    for f in [
        "checkpoint.safetensors",
        "config.json",
        "loss.png",
        "loss.csv",
        "sample.txt",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let ck = out.join("checkpoint.safetensors");
    let sampled = main_with(vec![
        "gpt".into(),
        "--sample".into(),
        ck.to_str().unwrap().into(),
        "--device".into(),
        device.into(),
        "--prompt".into(),
        "the old".into(),
        "--tokens".into(),
        "12".into(),
    ])
    .unwrap();
    assert!(sampled.sample.starts_with("the old"));
    assert!(sampled.sample.chars().count() == "the old".len() + 12);
}

#[test]
fn the_job_trains_saves_and_samples_on_the_cpu() {
    trains_and_samples("cpu", "cpu");
}

#[test]
fn the_job_trains_saves_and_samples_on_the_gpu() {
    if common::gpu_or_skip("the_job_trains_saves_and_samples_on_the_gpu").is_some() {
        trains_and_samples("gpu", "gpu");
    }
}

#[test]
fn a_bpe_vocabulary_trains_too() {
    let dir = Scratch::new("gpt-bpe");
    let data = text(&dir);
    let out = dir.path("run");
    let extra = [
        "--tokenizer",
        "bpe",
        "--vocab-size",
        "300",
        "--prompt",
        "the cat",
    ];
    let got = main_with(argv(&data, &out, "cpu", &extra)).unwrap();
    assert!(got.val_loss.unwrap() < 0.6 * 300f32.ln());
    assert!(got.sample.starts_with("the cat"));
}

#[test]
fn resume_is_bit_identical() {
    let dir = Scratch::new("gpt-resume");
    let data = text(&dir);
    let mut config = GptRunConfig::defaults();
    config.data = data.to_str().unwrap().into();
    config.model.ctx = 16;
    config.model.dim = 32;
    config.model.depth = 2;
    config.model.heads = 2;
    config.model.dropout = 0.1;
    config.steps = 8;
    config.batch = 4;
    config.warmup = 2;
    let corpus = tokenize(&read_corpus(&config.data).unwrap(), &config, None).unwrap();
    config.model.vocab = corpus.tokenizer.vocab_size();
    let cpu = Device::cpu();
    let mut whole = GptRun::new(config.clone(), corpus.train.clone(), &cpu).unwrap();
    let mut first = GptRun::new(config.clone(), corpus.train.clone(), &cpu).unwrap();
    for _ in 0..8 {
        whole.train_step().unwrap();
    }
    for _ in 0..3 {
        first.train_step().unwrap();
    }
    let ck = dir.path("ck.safetensors");
    first.save(&ck, &corpus).unwrap();
    let loaded = checkpoint::load(&ck).unwrap();
    let mut resumed = GptRun::resume(&loaded, &ck, config, corpus.train.clone(), &cpu).unwrap();
    for _ in 3..8 {
        resumed.train_step().unwrap();
    }
    assert_eq!(resumed.history, whole.history);
    for ((name, a), (_, b)) in whole
        .model
        .state_dict()
        .iter()
        .zip(resumed.model.state_dict())
    {
        assert_eq!(a.to_vec(), b.to_vec(), "{name} differs after resume");
    }
}

fn refused(args: Vec<String>, want: &str) {
    match main_with(args.clone()) {
        Ok(_) => panic!("{args:?} was accepted; expected an error containing {want:?}"),
        Err(e) => {
            assert!(
                e.contains(want),
                "{args:?}: {e:?} does not mention {want:?}"
            );
            assert_eq!(e.lines().count(), 1, "{args:?}: not one line: {e:?}");
        }
    }
}

#[test]
fn a_target_loss_stops_at_the_first_estimate_that_reaches_it() {
    let dir = Scratch::new("gpt-target");
    let data = text(&dir);
    let out = dir.path("run");
    // Any estimate is below 100 nats: the run stops at the first one (step 20 of 40), saved.
    let got = main_with(argv(&data, &out, "cpu", &["--target-loss", "100"])).unwrap();
    assert_eq!(got.steps, 20);
    assert!(out.join("checkpoint.safetensors").exists());
    // None is below 1e-6: the run goes to the end.
    let got = main_with(argv(
        &data,
        &out,
        "cpu",
        &["--target-loss", "1e-6", "--overwrite"],
    ))
    .unwrap();
    assert_eq!(got.steps, 40);
}

#[test]
fn bad_input_is_refused_in_one_line() {
    let dir = Scratch::new("gpt-bad");
    let data = text(&dir);
    let out = dir.path("run");
    let a = |extra: &[&str]| argv(&data, &out, "cpu", extra);
    refused(a(&["--ctx", "0"]), "--ctx");
    refused(a(&["--dim", "30", "--heads", "4"]), "--dim");
    refused(a(&["--dropout", "1"]), "--dropout");
    refused(a(&["--lr", "nan"]), "--lr");
    refused(a(&["--steps", "ten"]), "--steps");
    refused(a(&["--tokenizer", "words"]), "--tokenizer");
    refused(
        a(&["--tokenizer", "missing-vocab.txt"]),
        "missing-vocab.txt",
    );
    let short = dir.path("short.txt");
    std::fs::write(&short, "to be or not to be").unwrap();
    refused(argv(&short, &out, "cpu", &[]), "too few");
    refused(a(&["--temperature", "0"]), "--temperature");
    refused(a(&["--target-loss", "-1"]), "--target-loss");
    refused(a(&["--queue", "5"]), "--queue");
    let missing = dir.path("missing.txt");
    refused(argv(&missing, &out, "cpu", &[]), "missing.txt");
    let binary = dir.path("binary.txt");
    std::fs::write(&binary, [0xffu8, 0xfe, 0x00]).unwrap();
    refused(argv(&binary, &out, "cpu", &[]), "not UTF-8");

    // A finished run: refuse to overwrite it, to resume it with another shape or text, to
    // sample with training flags, and a prompt outside its vocabulary.
    main_with(a(&["--steps", "4"])).unwrap();
    let ck = out.join("checkpoint.safetensors");
    let before = std::fs::read(&ck).unwrap();
    refused(a(&["--steps", "4"]), "--overwrite");
    let resume = |extra: &[&str]| {
        let mut v = a(&["--resume", ck.to_str().unwrap()]);
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    refused(resume(&["--dim", "64"]), "--dim");
    refused(resume(&["--steps", "2"]), "already taken");
    let other = dir.path("other.txt");
    std::fs::write(&other, "another text entirely, another text entirely").unwrap();
    let mut changed = argv(&other, &out, "cpu", &["--steps", "8"]);
    changed.extend(["--resume".to_string(), ck.to_str().unwrap().to_string()]);
    refused(changed, "--data");
    let sample = |extra: &[&str]| {
        let mut v: Vec<String> = ["gpt", "--device", "cpu", "--sample", ck.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    refused(sample(&["--steps", "5"]), "--steps");
    refused(sample(&["--prompt", "ξ"]), "--prompt");
    assert_eq!(
        std::fs::read(&ck).unwrap(),
        before,
        "a refused run touched the checkpoint"
    );
    let mut bytes = before.clone();
    let n = bytes.len();
    bytes[n - 10] ^= 0x40;
    let corrupt = dir.path("corrupt.safetensors");
    std::fs::write(&corrupt, bytes).unwrap();
    refused(
        sample(&[])
            .into_iter()
            .map(|s| s.replace(ck.to_str().unwrap(), corrupt.to_str().unwrap()))
            .collect(),
        "checksum",
    );
}

#[test]
fn an_absurd_learning_rate_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let dir = Scratch::new("gpt-diverge");
    let data = text(&dir);
    let out = dir.path("run");
    let a = |extra: &[&str]| argv(&data, &out, "cpu", extra);
    main_with(a(&["--steps", "4"])).unwrap();
    let ck = out.join("checkpoint.safetensors");
    let before = std::fs::read(&ck).unwrap();
    let e = main_with(a(&[
        "--resume",
        ck.to_str().unwrap(),
        "--steps",
        "40",
        "--lr",
        "1e30",
        "--clip",
        "0",
    ]));
    // --clip may not change on resume: the run refuses before training.
    assert!(e.unwrap_err().contains("--clip"));
    let e = main_with(a(&[
        "--resume",
        ck.to_str().unwrap(),
        "--steps",
        "40",
        "--lr",
        "1e30",
    ]))
    .unwrap_err();
    assert!(
        e.contains("diverged") && e.contains("still holds step 4"),
        "{e}"
    );
    assert_eq!(std::fs::read(&ck).unwrap(), before);
}
