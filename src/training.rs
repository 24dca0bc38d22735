//! The training loops: the main job's (steps to the configured total with checkpoints, the online
//! kNN monitor on validation images, a heartbeat — a bar on a terminal, plain lines in a log — and
//! the curves at the end) and the text jobs' (GPT, BERT, BART: the same steps, checkpoints and
//! heartbeat around each job's own evaluation).

use crate::plot::{save_image_grid, Chart, Kind, Series};
use crate::pretrain::Args;
use crate::run::{Cause, Run, Stopped};
use indicatif::{ProgressBar, ProgressStyle};
use selfsup_engine::data::Dataset;
use selfsup_engine::nn::Module;
use selfsup_engine::{Device, Tensor};
use selfsup_models::eval::{extract_features, knn_accuracy};
use selfsup_models::vit::VisionTransformer;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

/// A progress bar at `pos` of `total` steps when stderr is a terminal; `None` means plain log
/// lines instead.
pub(crate) fn progress_bar(total: u64, pos: u64) -> Option<ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(total).with_position(pos);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} {per_sec} ETA {eta}")
                .expect("a valid template"),
        );
        bar
    })
}

/// The heartbeat of the text jobs' loops (GPT, BERT, BART): a bar on a terminal, else a line
/// `step S/N loss L R steps/s ETA T s` every `log_every` seconds.
pub(crate) struct Heartbeat {
    bar: Option<ProgressBar>,
    total: u64,
    start: u64,
    /// The last step beaten: a loop may stop before `total` (a target reached).
    last: u64,
    t0: Instant,
    last_log: Instant,
    log_every: f64,
}

impl Heartbeat {
    /// A loop at step `pos` of `total`.
    pub(crate) fn new(total: u64, pos: u64, log_every: f64) -> Heartbeat {
        Heartbeat {
            bar: progress_bar(total, pos),
            total,
            start: pos,
            last: pos,
            t0: Instant::now(),
            last_log: Instant::now(),
            log_every,
        }
    }

    /// Step `step` is done with training loss `loss`.
    pub(crate) fn beat(&mut self, step: u64, loss: f32) {
        self.last = step;
        match &self.bar {
            Some(bar) => {
                bar.set_message(format!("loss {loss:.3}"));
                bar.inc(1);
            }
            None if self.last_log.elapsed().as_secs_f64() >= self.log_every => {
                let rate = (step - self.start) as f64 / self.t0.elapsed().as_secs_f64();
                println!(
                    "step {step}/{} loss {loss:.4} {rate:.2} steps/s ETA {:.0} s",
                    self.total,
                    (self.total - step) as f64 / rate.max(1e-9)
                );
                self.last_log = Instant::now();
            }
            None => {}
        }
    }

    /// A line that does not break the bar.
    pub(crate) fn say(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => println!("{line}"),
        }
    }

    /// Seconds since the loop began.
    pub(crate) fn elapsed(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    /// Ends the bar: the steps this loop took and the seconds they took.
    pub(crate) fn finish(self) -> (u64, f64) {
        match &self.bar {
            Some(bar) if self.last < self.total => bar.abandon(),
            Some(bar) => bar.finish(),
            None => {}
        }
        (self.last - self.start, self.elapsed())
    }
}

/// What to tell a user whose run stopped: what happened, and which checkpoint (if any) to
/// resume — at a tenth of the peak rate `lr` after a divergence, as it was after a GPU failure.
pub(crate) fn stopped(d: &Stopped, saved: Option<u64>, ckpt: &Path, lr: f64) -> String {
    let device = matches!(d.cause, Cause::Device(_));
    match (saved, device) {
        (Some(step), false) => format!(
            "{d}; {} still holds step {step}; resume it with a lower rate: --resume {} --lr {:.0e}",
            ckpt.display(),
            ckpt.display(),
            lr / 10.0
        ),
        (Some(step), true) => format!(
            "{d}; {} still holds step {step}; resume it with --resume {} (a smaller --batch if \
             memory ran out)",
            ckpt.display(),
            ckpt.display()
        ),
        (None, false) => format!(
            "{d}; no checkpoint was written; start again with a lower rate, e.g. --lr {:.0e}",
            lr / 10.0
        ),
        (None, true) => format!("{d}; no checkpoint was written"),
    }
}

/// What the text jobs' shared loop ([`text_loop`]) needs of a run; `Data` is what a step draws
/// from and what the checkpoint records the checksum of.
pub(crate) trait TextRun {
    type Data: ?Sized;
    /// Optimizer steps taken.
    fn step(&self) -> u64;
    /// The peak learning rate, for the advice after a divergence.
    fn peak_lr(&self) -> f64;
    fn train_step(&mut self, data: &Self::Data) -> Result<f32, Stopped>;
    fn save(&self, path: &Path, data: &Self::Data) -> Result<(), String>;
    /// Tokens one step reads, where the job reports its throughput.
    fn tokens_per_step(&self) -> Option<usize> {
        None
    }
}

/// How often a text job evaluates (in steps), saves (in steps) and logs (in seconds).
pub(crate) struct Cadence {
    pub eval_every: u64,
    pub checkpoint_every: u64,
    pub log_every: f64,
}

/// Steps `run` to `total` with a heartbeat; every `eval_every` steps and at the end `evaluate`
/// reports (through the heartbeat) and may end the run early by returning `true`; a checkpoint
/// every `checkpoint_every` steps, at the end and at an early end. A divergence names the last
/// good checkpoint. At the end one line: the steps taken, their time and the checkpoint.
pub(crate) fn text_loop<R: TextRun>(
    run: &mut R,
    data: &R::Data,
    total: u64,
    ckpt: &Path,
    every: &Cadence,
    mut evaluate: impl FnMut(&mut R, &Heartbeat) -> Result<bool, String>,
) -> Result<(), String> {
    let mut heartbeat = Heartbeat::new(total, run.step(), every.log_every);
    // A resumed run's own checkpoint is its last good one until it saves again.
    let mut saved: Option<u64> = (run.step() > 0 && ckpt.exists()).then_some(run.step());
    while run.step() < total {
        let loss = run
            .train_step(data)
            .map_err(|d| stopped(&d, saved, ckpt, run.peak_lr()))?;
        let step = run.step();
        heartbeat.beat(step, loss);
        let done =
            (step.is_multiple_of(every.eval_every) || step == total) && evaluate(run, &heartbeat)?;
        if done || step.is_multiple_of(every.checkpoint_every) || step == total {
            run.save(ckpt, data)?;
            saved = Some(step);
        }
        if done {
            break;
        }
    }
    let (trained, secs) = heartbeat.finish();
    if trained > 0 {
        let throughput = run.tokens_per_step().map_or(String::new(), |t| {
            format!(", {:.0} tokens/s", (trained as usize * t) as f64 / secs)
        });
        println!(
            "training: {trained} steps in {secs:.1} s ({:.1} ms/step{throughput}); checkpoint {}",
            1e3 * secs / trained as f64,
            ckpt.display()
        );
    }
    Ok(())
}

/// Refuses to resume `path`, a run at `step`, with fewer `--steps`; else says where it resumes.
pub(crate) fn resumed_at(path: &Path, step: u64, steps: u64) -> Result<(), String> {
    if step > steps {
        return Err(format!(
            "--steps {steps} is below the {step} steps {} has already taken",
            path.display()
        ));
    }
    println!("resumed {} at step {step}", path.display());
    Ok(())
}

/// Steps until the configured total, with checkpoints, the online kNN monitor and a heartbeat:
/// a bar on a terminal, a plain line every `--log-every` seconds otherwise (logs, CI).
pub(crate) fn train_loop(
    args: &Args,
    run: &mut Run,
    train: &Dataset,
    device: &Device,
    ckpt: &Path,
) -> Result<(), String> {
    let total = run.config.steps;
    let bar = progress_bar(total, run.step);
    let (bank, val) = monitor_split(train);
    let (t0, start) = (Instant::now(), run.step);
    let mut last_log = Instant::now();
    // A resumed run's own checkpoint is its last good one until it saves again.
    let mut saved: Option<u64> = (run.step > 0 && ckpt.exists()).then_some(run.step);
    while run.step < total {
        let stats = run
            .train_step()
            .map_err(|d| stopped(&d, saved, ckpt, run.config.optim.lr))?;
        let msg = format!("loss {:.4} lr {:.2e}", stats.loss, stats.lr);
        match &bar {
            Some(bar) => {
                bar.set_message(msg.clone());
                bar.inc(1);
            }
            None if last_log.elapsed().as_secs_f64() >= args.log_every || run.step == total => {
                let rate = (run.step - start) as f64 / t0.elapsed().as_secs_f64();
                let eta = (total - run.step) as f64 / rate.max(1e-9);
                println!(
                    "step {}/{total} {msg} {rate:.2} steps/s ETA {:.0}m{:02.0}s",
                    run.step,
                    (eta / 60.0).floor(),
                    eta % 60.0
                );
                last_log = Instant::now();
            }
            None => {}
        }
        if args.eval_every > 0 && (run.step.is_multiple_of(args.eval_every) || run.step == total) {
            let acc = online_knn(run.model.encoder(), &bank, &val, device);
            run.knn_history.push((run.step, acc));
            let line = format!("step {}: online kNN {acc:.1} % (validation)", run.step);
            match &bar {
                Some(bar) => bar.println(line),
                None => println!("{line}"),
            }
        }
        let evaluating = args.eval_every > 0 && run.step.is_multiple_of(args.eval_every);
        if evaluating || run.step == total {
            save_reconstructions(run, &val, device, ckpt)?;
        }
        if run.step.is_multiple_of(args.checkpoint_every) || run.step == total {
            run.save(ckpt)?;
            saved = Some(run.step);
        }
    }
    if let Some(bar) = bar {
        bar.finish();
    }
    let trained = total.saturating_sub(start);
    if trained > 0 {
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "pre-training: {trained} steps in {secs:.1} s ({:.3} s/step); checkpoint {}",
            secs / trained as f64,
            ckpt.display()
        );
    }
    Ok(())
}

/// The online kNN monitor's labelled bank and validation queries, both from the training images
/// (never the test set, so that settings chosen by watching it are not chosen on the test set):
/// up to 2,000 and 1,000 of them.
fn monitor_split(train: &Dataset) -> (Dataset, Dataset) {
    let val = (train.n / 4).min(1000);
    let bank = (train.n - val).min(2000);
    let pick = |r: std::ops::Range<usize>| train.subset(&r.collect::<Vec<_>>());
    (pick(0..bank), pick(train.n - val..train.n))
}

/// `reconstructions.png` beside the checkpoint, for methods that reconstruct pixels: the first
/// eight validation images, their masked input and the reconstructions, under fixed masks so
/// successive pictures differ only by what the model learnt.
fn save_reconstructions(
    run: &Run,
    val: &Dataset,
    device: &Device,
    ckpt: &Path,
) -> Result<(), String> {
    let b = val.n.min(8);
    let shape = (b, val.c, val.h, val.w);
    let pixels = val.images[..b * val.image_len()].to_vec();
    let images = Tensor::from_vec(pixels.clone(), &[b, val.c, val.h, val.w], device);
    run.model.set_training(false);
    let pictures = run.model.reconstructions(&images, RECONSTRUCTION_SEED);
    run.model.set_training(true);
    let Some([masked, predicted, pasted]) = pictures else {
        return Ok(());
    };
    let columns = [
        ("original", pixels),
        ("masked", masked.to_vec()),
        ("reconstruction", predicted.to_vec()),
        ("reconstruction + visible", pasted.to_vec()),
    ];
    let path = ckpt.with_file_name("reconstructions.png");
    save_image_grid(&path, &columns, shape, 4).map_err(|e| format!("{}: {e}", path.display()))
}

/// The masks of the reconstruction pictures (any fixed value).
const RECONSTRUCTION_SEED: u64 = 7;

/// kNN accuracy (%) of `val` against `bank`, with the encoder in evaluation mode.
fn online_knn(encoder: &VisionTransformer, bank: &Dataset, val: &Dataset, device: &Device) -> f32 {
    encoder.set_training(false);
    let (b, v) = (
        extract_features(encoder, bank, 256, device),
        extract_features(encoder, val, 256, device),
    );
    encoder.set_training(true);
    (knn_accuracy(&b, &v, 20, 0.07, bank.classes.max(val.classes)) * 100.0) as f32
}

/// `loss.png` and `loss.csv`, and `knn.png` when the monitor ran.
pub(crate) fn plot_curves(out: &Path, run: &Run) -> Result<(), String> {
    let history = &run.history;
    let raw: Vec<(f64, f64)> = history
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as f64 + 1.0, l as f64))
        .collect();
    let w = (history.len() / 50).max(1);
    let smooth: Vec<(f64, f64)> = history
        .windows(w)
        .enumerate()
        .map(|(i, win)| {
            (
                (i + w) as f64,
                win.iter().map(|&v| v as f64).sum::<f64>() / w as f64,
            )
        })
        .collect();
    let c = &run.config;
    let loss = Chart {
        title: format!(
            "{} loss (batch {}, lr {:.0e})",
            c.method.title(),
            c.batch,
            c.optim.lr
        ),
        x_label: "step".into(),
        y_label: "loss".into(),
        series: vec![
            Series {
                name: "loss".into(),
                points: raw,
            },
            Series {
                name: format!("mean of {w}"),
                points: smooth,
            },
        ],
        log_y: false,
        kind: Kind::Line,
    };
    let save = |chart: &Chart, name: &str| {
        let path = out.join(name);
        chart
            .save_png(&path, 900, 500)
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    save(&loss, "loss.png")?;
    let csv: String = history
        .iter()
        .enumerate()
        .map(|(i, l)| format!("{},{l}\n", i + 1))
        .collect();
    std::fs::write(out.join("loss.csv"), format!("step,loss\n{csv}"))
        .map_err(|e| format!("{}: {e}", out.display()))?;
    let mut plots = "loss.png".to_string();
    if !run.knn_history.is_empty() {
        let knn = Chart {
            title: format!(
                "{}: online kNN accuracy on validation images",
                c.method.title()
            ),
            x_label: "step".into(),
            y_label: "kNN accuracy %".into(),
            series: vec![Series {
                name: "kNN (k=20)".into(),
                points: run
                    .knn_history
                    .iter()
                    .map(|&(s, a)| (s as f64, a as f64))
                    .collect(),
            }],
            log_y: false,
            kind: Kind::Line,
        };
        save(&knn, "knn.png")?;
        plots += ", knn.png";
    }
    println!("curves: {} ({plots}, loss.csv)", out.display());
    Ok(())
}
