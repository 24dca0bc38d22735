//! The main job as a user meets it: bad flags and files get one line that names the flag or
//! file (no panic, no backtrace), before any work and without touching an earlier run; a
//! diverging run stops and keeps its last good checkpoint; resume refuses changed settings;
//! every method's checkpoint evaluates with `--eval-only`; progress shows up in a log.

mod common;

use common::Scratch;

use selfsup::pretrain::main_with;
use selfsup::run::Run;
use selfsup_engine::checkpoint;
use selfsup_engine::data::Dataset;
use selfsup_engine::Device;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Writes an IDX images file `name-images-idx3-ubyte` (and its labels) of `n` images of
/// `h`×`w` pixels with the given labels; returns the images path.
fn write_idx(
    dir: &Scratch,
    name: &str,
    h: usize,
    w: usize,
    pixels: &[u8],
    labels: &[u8],
) -> PathBuf {
    let n = labels.len();
    let mut img = vec![0, 0, 8, 3];
    for d in [n, h, w] {
        img.extend((d as u32).to_be_bytes());
    }
    img.extend_from_slice(pixels);
    let mut lab = vec![0, 0, 8, 1];
    lab.extend((n as u32).to_be_bytes());
    lab.extend_from_slice(labels);
    std::fs::write(dir.path(&format!("{name}-labels-idx1-ubyte")), lab).unwrap();
    let path = dir.path(&format!("{name}-images-idx3-ubyte"));
    std::fs::write(&path, img).unwrap();
    path
}

/// The first `n` embedded digits as an IDX pair in `dir`.
fn digits(dir: &Scratch, n: usize) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist9k-images-idx3-ubyte.gz");
    let d = Dataset::load_idx(&path).unwrap();
    let pixels: Vec<u8> = d.images[..n * 784]
        .iter()
        .map(|v| (v * 255.0).round() as u8)
        .collect();
    let labels: Vec<u8> = d.labels[..n].iter().map(|&l| l as u8).collect();
    write_idx(dir, "digits", 28, 28, &pixels, &labels)
}

/// A tiny, fast run on `data` into `out` (a resumed run without one writes beside its
/// checkpoint), plus `extra` flags, which override the ones here.
fn argv(data: &Path, out: Option<&Path>, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "pretrain",
        "--device",
        "cpu",
        "--holdout",
        "40",
        "--dim",
        "16",
        "--depth",
        "1",
        "--heads",
        "2",
        "--patch",
        "7",
        // The linear patch embedding: cheaper, and the only one a 7-px patch allows.
        "--stem",
        "patch",
        "--batch",
        "16",
        "--steps",
        "4",
        "--eval-every",
        "2",
        "--checkpoint-every",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(["--data".into(), data.display().to_string()]);
    if let Some(out) = out {
        v.extend(["--out".into(), out.display().to_string()]);
    }
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// Runs the job expecting a one-line error that contains `want`.
fn refused(args: Vec<String>, want: &str) {
    let err = match main_with(args.clone()) {
        Ok(_) => panic!("accepted: {args:?}"),
        Err(e) => e,
    };
    assert!(!err.contains('\n'), "not one line: {err}");
    assert!(
        err.contains(want),
        "{args:?}\n  gave {err:?}\n  expected it to mention {want:?}"
    );
}

fn file_hash(p: &Path) -> u32 {
    crc32fast::hash(&std::fs::read(p).unwrap())
}

#[test]
fn bad_flags_and_files_are_refused_in_one_line_and_leave_the_earlier_run_alone() {
    let dir = Scratch::new("cli-bad");
    let data = digits(&dir, 120);
    let out = dir.path("run");
    main_with(argv(&data, Some(&out), &[])).unwrap();
    let ckpt = out.join("checkpoint.safetensors");
    let before = (file_hash(&ckpt), file_hash(&out.join("config.json")));

    let small = write_idx(&dir, "small", 14, 14, &[0; 4 * 196], &[0, 1, 2, 3]);
    let empty = write_idx(&dir, "empty", 0, 0, &[], &[0, 1, 2]);
    let stray = write_idx(&dir, "stray", 28, 28, &vec![0; 300 * 784], &{
        let mut l: Vec<u8> = (0..300).map(|i| (i % 10) as u8).collect();
        l[7] = 200;
        l
    });
    let fifo = dir.path("fifo-images-idx3-ubyte");
    std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    let s = |p: &Path| p.display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            argv(&data, Some(&out), &["--dim", "30", "--heads", "4"]),
            "--dim",
        ),
        (argv(&data, Some(&out), &["--heads", "0"]), "--heads"),
        // f16 storage is the GPU's: the CPU backend refuses it by name.
        (argv(&data, Some(&out), &["--f16"]), "--f16"),
        (argv(&data, Some(&out), &["--patch", "5"]), "--patch"),
        (
            argv(&data, Some(&out), &["--stem", "conv", "--patch", "7"]),
            "--patch",
        ),
        (argv(&data, Some(&out), &["--stem", "convex"]), "--stem"),
        (
            argv(&data, Some(&out), &["--stem", "conv", "--method", "mae"]),
            "--stem",
        ),
        (
            argv(&data, Some(&out), &["--temperature", "0"]),
            "--temperature",
        ),
        (
            argv(&data, Some(&out), &["--temperature", "-1"]),
            "--temperature",
        ),
        (
            argv(&data, Some(&out), &["--temperature", "nan"]),
            "--temperature",
        ),
        (
            argv(&data, Some(&out), &["--checkpoint-every", "0"]),
            "--checkpoint-every",
        ),
        (argv(&data, Some(&out), &["--batch", "0"]), "--batch"),
        (argv(&data, Some(&out), &["--batch", "100000"]), "--batch"),
        (argv(&data, Some(&out), &["--dim", "65536"]), "--dim"),
        (argv(&data, Some(&out), &["--holdout", "0"]), "--holdout"),
        (
            argv(&data, Some(&out), &["--weight-decay", "nan"]),
            "--weight-decay",
        ),
        (argv(&data, Some(&out), &["--lr", "abc"]), "--lr"),
        (
            argv(&data, Some(&out), &["--method", "dino-v9"]),
            "--method",
        ),
        (argv(&data, Some(&out), &["--queue", "64"]), "--queue"),
        (
            argv(
                &data,
                Some(&out),
                &["--method", "moco-v2", "--queue", "100000"],
            ),
            "--queue",
        ),
        (argv(&data, Some(&out), &["--crop-min", "0"]), "--crop-min"),
        (
            argv(
                &data,
                Some(&out),
                &["--method", "clip", "--captions", "letters"],
            ),
            "--captions letters",
        ),
        (
            argv(
                &data,
                Some(&out),
                &["--method", "clip", "--text-heads", "5"],
            ),
            "--text-heads",
        ),
        (
            argv(&data, Some(&out), &["--recipe", "cars"]),
            "--recipe cars",
        ),
        (
            argv(&data, Some(&out), &["--no-such-flag"]),
            "--no-such-flag",
        ),
        (
            argv(&data, Some(&out), &["--test-data", &s(&small)]),
            "small-images",
        ),
        (argv(&empty, Some(&out), &[]), "empty-images"),
        (argv(&stray, Some(&out), &[]), "stray-labels"),
        (argv(&fifo, Some(&out), &[]), "not a regular file"),
        (
            argv(Path::new("/dev/zero"), Some(&out), &[]),
            "not a regular file",
        ),
        (
            argv(&data, Some(&out), &["--finetune-labels", "100000"]),
            "--finetune-labels",
        ),
        // A good command into a folder that holds a run.
        (argv(&data, Some(&out), &[]), "--overwrite"),
        // Resuming with a setting that may not change, or fewer steps than were taken.
        (
            argv(&data, None, &["--resume", &s(&ckpt), "--batch", "8"]),
            "--batch 8 differs",
        ),
        (
            argv(
                &data,
                None,
                &["--resume", &s(&ckpt), "--temperature", "0.5"],
            ),
            "--temperature",
        ),
        (
            argv(&data, None, &["--resume", &s(&ckpt), "--method", "byol"]),
            "--method",
        ),
        (
            argv(&data, None, &["--resume", &s(&ckpt), "--steps", "1"]),
            "--steps 1",
        ),
    ];
    for (args, want) in cases {
        refused(args, want);
    }
    assert_eq!(
        (file_hash(&ckpt), file_hash(&out.join("config.json"))),
        before,
        "a refused command changed the earlier run"
    );

    // One flipped byte in the checkpoint: refused on resume and evaluation, naming the file.
    let mut bytes = std::fs::read(&ckpt).unwrap();
    let at = bytes.len() - 3;
    bytes[at] ^= 1;
    let flipped = dir.path("flipped.safetensors");
    std::fs::write(&flipped, bytes).unwrap();
    refused(
        argv(&data, Some(&dir.path("r2")), &["--resume", &s(&flipped)]),
        "checksum",
    );
    refused(
        argv(&data, Some(&dir.path("r3")), &["--eval-only", &s(&flipped)]),
        "flipped.safetensors",
    );
}

#[test]
fn an_absurd_learning_rate_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let dir = Scratch::new("cli-diverge");
    let data = digits(&dir, 120);
    let out = dir.path("run");
    main_with(argv(&data, Some(&out), &["--steps", "2"])).unwrap();
    let ckpt = out.join("checkpoint.safetensors");
    let good = file_hash(&ckpt);
    let s = ckpt.display().to_string();
    let err = main_with(argv(
        &data,
        None,
        &["--resume", &s, "--steps", "40", "--lr", "1e30"],
    ))
    .err()
    .expect("a run at lr 1e30 must stop");
    assert!(
        err.contains("diverged at step") && err.contains("--lr"),
        "{err}"
    );
    assert!(!err.contains('\n'), "{err}");
    assert!(err.contains(&format!("{s} still holds step 2")), "{err}");
    // The checkpoint it resumed from was never replaced by NaNs, and still resumes.
    assert_eq!(file_hash(&ckpt), good);
    let ck = checkpoint::load(&ckpt).unwrap();
    let config = Run::config_of(&ck, &ckpt).unwrap();
    let train = Arc::new(Dataset::load_idx(&data).unwrap());
    Run::resume(&ck, &ckpt, config, train, &Device::cpu()).unwrap();
}

/// A checkpoint whose weights hold one NaN (written by a run without these checks).
fn poisoned(dir: &Scratch, data: &Path) -> PathBuf {
    let out = dir.path("run");
    main_with(argv(data, Some(&out), &["--steps", "2"])).unwrap();
    let ckpt = out.join("checkpoint.safetensors");
    let ck = checkpoint::load(&ckpt).unwrap();
    let mut tensors: Vec<(String, selfsup_engine::Tensor)> = ck.tensors.into_iter().collect();
    let (_, w) = tensors
        .iter_mut()
        .find(|(n, _)| n == "model.encoder.blocks.0.mlp.fc1.weight")
        .unwrap();
    let mut v = w.to_vec();
    v[3] = f32::NAN;
    *w = selfsup_engine::Tensor::from_vec(v, w.shape(), &Device::cpu());
    let path = dir.path("nan.safetensors");
    checkpoint::save(
        &path,
        &tensors,
        &ck.metadata
            .into_iter()
            .filter(|(k, _)| k != "crc32")
            .collect(),
    )
    .unwrap();
    path
}

#[test]
fn a_nan_weight_is_refused_on_resume() {
    let dir = Scratch::new("cli-nan");
    let data = digits(&dir, 120);
    let path = poisoned(&dir, &data);
    let s = path.display().to_string();
    refused(
        argv(
            &data,
            Some(&dir.path("r")),
            &["--resume", &s, "--steps", "4"],
        ),
        "not finite",
    );
}

/// The same NaN on the GPU backend: the step is refused before the optimizer runs; and an
/// absurd learning rate stops a GPU run too.
#[test]
fn a_nan_weight_stops_a_gpu_run() {
    let Some(gpu) = common::gpu_or_skip("a_nan_weight_stops_a_gpu_run") else {
        return;
    };
    let dir = Scratch::new("cli-nan-gpu");
    let data = digits(&dir, 120);
    let path = poisoned(&dir, &data);
    let ck = checkpoint::load(&path).unwrap();
    let config = Run::config_of(&ck, &path).unwrap();
    let train = Arc::new(
        Dataset::load_idx(&data)
            .unwrap()
            .subset(&(0..80).collect::<Vec<_>>()),
    );
    let mut run = Run::new(config, train, &gpu);
    let w = selfsup_engine::nn::Module::named_parameters(&*run.model)
        .into_iter()
        .find(|(n, _)| n == "encoder.blocks.0.mlp.fc1.weight")
        .unwrap()
        .1;
    w.set_data(&ck.tensors["model.encoder.blocks.0.mlp.fc1.weight"].to_device(&gpu));
    let err = run
        .train_step()
        .expect_err("a NaN weight must stop the step");
    assert!(err.to_string().contains("diverged at step 0"), "{err}");
    assert_eq!(run.step, 0);
    assert!(
        run.save(&dir.path("never.safetensors")).is_err(),
        "NaN weights were saved"
    );
    // An absurd learning rate on the GPU: stopped within a few steps, never saved.
    let mut config = Run::config_of(&ck, &path).unwrap();
    config.optim.lr = 1e30;
    let train = Arc::new(
        Dataset::load_idx(&data)
            .unwrap()
            .subset(&(0..80).collect::<Vec<_>>()),
    );
    let mut run = Run::new(config, train, &gpu);
    let stopped = (0..10).find_map(|_| run.train_step().err());
    let err = stopped.expect("lr 1e30 must stop a GPU run within 10 steps");
    assert!(err.to_string().contains("diverged"), "{err}");
}

/// `--f16` on a GPU that stores f16: the run trains, checkpoints and evaluates with f16
/// operands, and its losses stay finite.
#[test]
fn a_gpu_run_takes_f16() {
    if common::f16_gpu_or_skip("a_gpu_run_takes_f16").is_none() {
        return;
    }
    let dir = Scratch::new("cli-f16");
    let data = digits(&dir, 120);
    let out = dir.path("run");
    let done = main_with(argv(&data, Some(&out), &["--device", "gpu", "--f16"])).unwrap();
    assert!(!done.rows.is_empty());
    let ck = checkpoint::load(&out.join("checkpoint.safetensors")).unwrap();
    let losses = ck.tensors["history.loss"].to_vec();
    assert!(
        losses.len() == 4 && losses.iter().all(|l| l.is_finite()),
        "{losses:?}"
    );
}

#[test]
fn every_methods_checkpoint_evaluates_with_eval_only() {
    let dir = Scratch::new("cli-eval");
    let data = digits(&dir, 120);
    for m in selfsup_models::method::MethodConfig::NAMES {
        let out = dir.path(m);
        let extra = [
            "--method",
            m,
            "--steps",
            "2",
            "--proj-hidden",
            "16",
            "--proj-out",
            "16",
        ];
        let extra: Vec<&str> = match m {
            "simsiam" => vec![
                "--method",
                m,
                "--steps",
                "2",
                "--proj-out",
                "16",
                "--pred-hidden",
                "8",
            ],
            "moco-v2" => [&extra[..], &["--queue", "32"]].concat(),
            "mae" => vec!["--method", m, "--steps", "2", "--decoder-dim", "16"],
            "clip" => vec!["--method", m, "--steps", "2", "--text-dim", "16"],
            "dino" => vec![
                "--method",
                m,
                "--steps",
                "2",
                "--out-dim",
                "32",
                "--head-hidden",
                "16",
                "--local-crops",
                "2",
                "--local-size",
                "14",
            ],
            _ => extra.to_vec(),
        };
        main_with(argv(&data, Some(&out), &extra)).unwrap();
        // Only a method that reconstructs pixels draws them: original, masked, reconstruction
        // and pasted columns of eight validation images, zoomed 4×.
        let pictures = out.join("reconstructions.png");
        assert_eq!(pictures.exists(), m == "mae", "{m}: reconstructions.png");
        if m == "mae" {
            let png = png::Decoder::new(std::io::BufReader::new(
                std::fs::File::open(&pictures).unwrap(),
            ))
            .read_info()
            .unwrap();
            let (w, h) = (png.info().width, png.info().height);
            assert!(w >= 4 * 28 * 4 && h >= 8 * 28 * 4, "{w}×{h}");
        }
        let ckpt = out.join("checkpoint.safetensors").display().to_string();
        let done = main_with(argv(&data, Some(&dir.path("x")), &["--eval-only", &ckpt])).unwrap();
        assert!(done.title.contains("(2 steps)"), "{m}: {}", done.title);
        assert_eq!(done.rows.len(), 3, "{m}");
        // Only CLIP has a text tower to classify with.
        assert_eq!(done.zero_shot.is_some(), m == "clip", "{m}");
        assert!(
            done.rows
                .iter()
                .all(|r| r.probe.is_finite() && r.knn >= 0.0),
            "{m}"
        );
    }
}

/// The example binary itself: exit status 1 and one `error:` line on stderr for bad input, and
/// plain progress lines on stdout when it is not a terminal.
#[test]
fn the_example_binary_fails_cleanly_and_logs_progress_without_a_terminal() {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/pretrain");
    if !bin.exists() {
        panic!(
            "{} is missing: cargo test builds the examples",
            bin.display()
        );
    }
    let dir = Scratch::new("cli-bin");
    let data = digits(&dir, 120);
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(&bin)
            .args(&argv(&data, Some(&dir.path("run")), extra)[1..])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = run(&["--heads", "0"]);
    assert_eq!(code, Some(1));
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // A misspelt kernel profile is named, whether or not there is a GPU.
    let out = std::process::Command::new(&bin)
        .args(&argv(&data, Some(&dir.path("run")), &["--device", "gpu"])[1..])
        .env("SELFSUP_GPU_KERNELS", "fast")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("SELFSUP_GPU_KERNELS=fast: expected software or hardware"),
        "{err}"
    );
    let (code, out, err) = run(&["--log-every", "0.000001"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("step 2/4 loss"), "{out}");
    assert!(out.contains("| random-init ViT (frozen) |"), "{out}");
}
