//! Resuming a run from its checkpoint continues the same run: on the CPU backend, a run
//! interrupted after 3 steps and resumed ends with bit-identical weights and optimizer state to
//! an uninterrupted 6-step run (the data order crosses an epoch boundary on the way).

use selfsup::simclr_run::{RunConfig, SimClrRun};
use selfsup_engine::data::Dataset;
use selfsup_engine::nn::Module;
use selfsup_engine::optim::Optimizer;
use selfsup_engine::Device;
use selfsup_models::vit::{Pool, VitConfig};
use std::path::Path;
use std::sync::Arc;

fn tiny() -> (RunConfig, Arc<Dataset>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist9k-images-idx3-ubyte.gz");
    let data = Dataset::load_idx(&path).unwrap();
    let data = Arc::new(data.subset(&(0..64).collect::<Vec<_>>()));
    let vit = VitConfig {
        image: 28,
        channels: 1,
        patch: 7,
        dim: 16,
        depth: 1,
        heads: 2,
        mlp_ratio: 2,
        pool: Pool::Cls,
    };
    let config = RunConfig {
        steps: 6,
        batch: 16,
        vit,
        temperature: 0.2,
        lr: 1e-3,
        weight_decay: 0.05,
        proj_hidden: 32,
        proj_out: 16,
        crop_min: 0.4,
        seed: 7,
    };
    (config, data)
}

fn state(run: &SimClrRun) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<(String, Vec<f32>)> = run
        .model
        .state_dict()
        .into_iter()
        .map(|(k, t)| (k, t.to_vec()))
        .collect();
    v.extend(
        run.optimizer
            .state_dict()
            .into_iter()
            .map(|(k, t)| (k, t.to_vec())),
    );
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn interrupted_and_resumed_run_is_bit_identical_to_an_uninterrupted_one() {
    let cpu = Device::cpu();
    let (config, data) = tiny();
    let mut straight = SimClrRun::new(config.clone(), data.clone(), &cpu);
    for _ in 0..6 {
        straight.train_step().unwrap();
    }

    let path =
        std::env::temp_dir().join(format!("selfsup-resume-{}.safetensors", std::process::id()));
    let mut first = SimClrRun::new(config, data.clone(), &cpu);
    for _ in 0..3 {
        first.train_step().unwrap();
    }
    first.save(&path).unwrap();
    drop(first);
    let mut resumed = SimClrRun::resume(&path, 6, data, &cpu).unwrap();
    assert_eq!(resumed.step, 3);
    for _ in 0..3 {
        resumed.train_step().unwrap();
    }
    std::fs::remove_file(&path).unwrap();

    assert_eq!(resumed.history, straight.history, "loss curves differ");
    let (a, b) = (state(&straight), state(&resumed));
    assert_eq!(a.len(), b.len());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(
            x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{name} differs after resuming"
        );
    }
}

#[test]
fn resuming_from_a_corrupt_checkpoint_is_refused_naming_the_file() {
    let (_, data) = tiny();
    let path = std::env::temp_dir().join(format!(
        "selfsup-corrupt-{}.safetensors",
        std::process::id()
    ));
    std::fs::write(&path, b"not a checkpoint").unwrap();
    let err = SimClrRun::resume(&path, 6, data, &Device::cpu())
        .err()
        .expect("must be refused")
        .to_string();
    std::fs::remove_file(&path).unwrap();
    assert!(err.contains("selfsup-corrupt"), "{err}");
}
