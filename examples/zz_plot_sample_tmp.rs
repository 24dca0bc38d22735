use selfsup::plot::{Chart, Series};
fn main() {
    let mut seed = 12345u64;
    let mut rnd = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 10000) as f64 / 10000.0 - 0.5
    };
    let train: Vec<(f64, f64)> = (0..500)
        .map(|i| {
            let t = i as f64;
            (
                t,
                2.3 * (-t / 80.0).exp() + 0.15 + 0.12 * rnd() * (-t / 300.0).exp(),
            )
        })
        .collect();
    let val: Vec<(f64, f64)> = (0..=10)
        .map(|i| {
            let t = i as f64 * 50.0;
            (t, 2.3 * (-t / 90.0).exp() + 0.25)
        })
        .collect();
    let c = Chart {
        title: "SimCLR pretraining (lr=3e-4, batch 256)".into(),
        x_label: "step".into(),
        y_label: "loss".into(),
        series: vec![
            Series {
                name: "train loss".into(),
                points: train,
            },
            Series {
                name: "val loss (every 50)".into(),
                points: val,
            },
        ],
        log_y: false,
    };
    c.save_png(std::path::Path::new("/tmp/plot_sample.png"), 800, 500)
        .unwrap();
    let acc: Vec<(f64, f64)> = (0..100)
        .map(|i| {
            let t = i as f64 * 2000.0;
            (
                t,
                -50.0 + 140.0 * (1.0 - (-t / 40000.0).exp()) + 4.0 * rnd(),
            )
        })
        .collect();
    let flat: Vec<(f64, f64)> = (0..100).map(|i| (i as f64 * 2000.0, 12.5)).collect();
    let c2 = Chart {
        title: "Quick brown fox jumps: xyz_QJ=1,2 +5%".into(),
        x_label: "tokens seen".into(),
        y_label: "accuracy gain (%)".into(),
        series: vec![
            Series {
                name: "probe".into(),
                points: acc,
            },
            Series {
                name: "baseline".into(),
                points: flat,
            },
            Series {
                name: "one point".into(),
                points: vec![(100000.0, 0.0)],
            },
            Series {
                name: "c".into(),
                points: vec![],
            },
            Series {
                name: "d".into(),
                points: vec![],
            },
            Series {
                name: "e".into(),
                points: vec![],
            },
            Series {
                name: "f (wraps)".into(),
                points: vec![],
            },
        ],
        log_y: false,
    };
    c2.save_png(std::path::Path::new("/tmp/plot_sample2.png"), 800, 500)
        .unwrap();
}
