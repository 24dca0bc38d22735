//! Several methods, one table: runs the main job once per method (each into `OUT/METHOD`) and
//! writes `OUT/results.md` (the methods' rows, then the shared baselines) and `OUT/results.png`
//! (probe and kNN accuracy side by side).
//!
//!     cargo run --release --example compare -- --methods simclr,byol,barlow
//!     cargo run --release --example compare -- --methods all --out runs/fashion \
//!         -- --data data/fashion10k-images-idx3-ubyte.gz \
//!            --test-data data/fashion2k-test-images-idx3-ubyte.gz
//!
//! Flags after `--` go to every run (`pretrain --help` lists them).

#[global_allocator]
static GLOBAL: selfsup::allocator::Allocator = selfsup::allocator::Allocator;

use clap::Parser;
use selfsup::models::method::MethodConfig;
use selfsup::plot::{Chart, Kind, Series};
use selfsup::pretrain::main_with;
use selfsup::report::Row;
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Pre-train several methods and write one results table and bar chart")]
struct Args {
    /// Comma-separated method names, or `all`
    #[arg(long, default_value = "all")]
    methods: String,
    /// Where each run's folder and the table and chart go
    #[arg(long, default_value = "runs/compare")]
    out: PathBuf,
    /// Flags passed to every run
    #[arg(last = true)]
    rest: Vec<String>,
}

fn main() {
    selfsup::allocator::keep_freed_pages();
    selfsup::program::run_main(|| run(Args::parse()));
}

fn run(args: Args) -> Result<(), String> {
    let methods: Vec<String> = match args.methods.as_str() {
        "all" => MethodConfig::NAMES.iter().map(|m| m.to_string()).collect(),
        list => list.split(',').map(|m| m.trim().to_string()).collect(),
    };
    for m in &methods {
        MethodConfig::named(m)?;
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut baselines: Vec<Row> = Vec::new();
    for m in &methods {
        println!("\n=== {m} ===");
        let mut argv = vec!["pretrain".to_string(), "--method".into(), m.clone()];
        argv.extend(["--out".into(), args.out.join(m).display().to_string()]);
        argv.extend(args.rest.iter().cloned());
        let done = main_with(argv).map_err(|e| format!("--method {m}: {e}"))?;
        let mut it = done.rows.into_iter();
        rows.extend(it.next());
        // The baselines are the same for every method (same data, seed and ViT shape).
        if baselines.is_empty() {
            baselines = it.collect();
        }
    }
    let all: Vec<&Row> = rows.iter().chain(&baselines).collect();
    let mut table = String::from(
        "| method | linear probe % | kNN % (k=20) | effective rank |\n|---|---|---|---|\n",
    );
    for r in &all {
        let rank = r.rank.map_or("-".into(), |(k, d)| format!("{k:.1} of {d}"));
        table += &format!("| {} | {:.1} | {:.1} | {rank} |\n", r.label, r.probe, r.knn);
    }
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let md = args.out.join("results.md");
    std::fs::write(&md, &table).map_err(|e| format!("{}: {e}", md.display()))?;
    let names: Vec<String> = all
        .iter()
        .enumerate()
        .map(|(i, r)| {
            format!(
                "{} {}",
                i + 1,
                r.label.split(" (").next().unwrap_or(&r.label)
            )
        })
        .collect();
    let series = |name: &str, get: fn(&Row) -> f64| Series {
        name: name.into(),
        points: all
            .iter()
            .enumerate()
            .map(|(i, r)| (i as f64 + 1.0, get(r)))
            .collect(),
    };
    let chart = Chart {
        title: "held-out accuracy of frozen features".into(),
        x_label: names.join(", "),
        y_label: "accuracy %".into(),
        series: vec![
            series("linear probe", |r| r.probe),
            series("kNN", |r| r.knn),
        ],
        log_y: false,
        kind: Kind::Bars,
    };
    let png = args.out.join("results.png");
    chart
        .save_png(&png, 1100, 500)
        .map_err(|e| format!("{}: {e}", png.display()))?;
    println!(
        "\n{table}\ntable: {}, chart: {}",
        md.display(),
        png.display()
    );
    Ok(())
}
