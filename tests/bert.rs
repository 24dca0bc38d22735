//! The BERT and BART jobs as a user meets them: a tiny run on two small books writes its
//! checkpoint and reports, a resumed run is bit-identical to an uninterrupted one, and bad input
//! is one line naming the flag or file.

use selfsup::bart::{BartRun, BartRunConfig};
use selfsup::bert::main_with;
use selfsup::mlm_run::{read_corpus, BertRunConfig, Corpus, MlmRun, Rows, Specials};
use selfsup_engine::checkpoint;
use selfsup_engine::nn::Module;
use selfsup_engine::Device;
use std::path::PathBuf;

/// Two small "books" of generated sentences, each with words of its own, in a fresh folder.
fn books(name: &str) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("selfsup-bert-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let words = [
        [
            "the", "whale", "sea", "ship", "harpoon", "captain", "white", "deep",
        ],
        [
            "the", "lady", "ball", "letter", "sister", "marriage", "estate", "dear",
        ],
    ];
    let mut files = Vec::new();
    for (b, w) in words.iter().enumerate() {
        let text: String = (0..300)
            .map(|i| {
                let s: Vec<&str> = (0..6).map(|j| w[(i * 7 + j * 3 + j * j) % 8]).collect();
                format!("The {}.\n\n", s.join(" "))
            })
            .collect();
        let path = dir.join(format!("book{b}.txt"));
        std::fs::write(&path, text).unwrap();
        files.push(path.display().to_string());
    }
    (dir, files.join(","))
}

/// Every weight of `a` equals `b`'s bit for bit.
fn assert_bit_identical(a: &dyn Module, b: &dyn Module) {
    for ((name, x), (_, y)) in a.state_dict().iter().zip(b.state_dict().iter()) {
        let (x, y) = (x.to_vec(), y.to_vec());
        assert!(
            x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{name} differs after resuming"
        );
    }
}

fn tiny(data: &str, steps: u64) -> BertRunConfig {
    let mut c = BertRunConfig::defaults();
    c.data = data.into();
    c.vocab_size = 100;
    c.model.max_positions = 16;
    c.model.dim = 16;
    c.model.depth = 1;
    c.model.heads = 2;
    c.model.intermediate = 32;
    c.steps = steps;
    c.batch = 8;
    c
}

#[test]
fn a_resumed_bert_run_is_bit_identical() {
    resumes_bit_identically(0.0);
}

#[test]
fn a_resumed_bert_run_with_the_contrastive_loss_is_bit_identical() {
    resumes_bit_identically(0.5);
}

fn resumes_bit_identically(contrast: f64) {
    let (dir, data) = books(&format!("resume{contrast}"));
    let cpu = Device::cpu();
    let mut config = tiny(&data, 6);
    config.contrast = contrast;
    let corpus = read_corpus(&config.data, 100, 16, None).unwrap();
    config.model.vocab = corpus.tokenizer.vocab_size();
    let specials = || Specials::of(&corpus.tokenizer).unwrap();
    let mut straight = MlmRun::new(config.clone(), specials(), &cpu);
    for _ in 0..6 {
        straight.train_step(&corpus).unwrap();
    }
    let mut first = MlmRun::new(config.clone(), specials(), &cpu);
    for _ in 0..3 {
        first.train_step(&corpus).unwrap();
    }
    let path = dir.join("ck.safetensors");
    first.save(&path, &corpus).unwrap();
    let ck = checkpoint::load(&path).unwrap();
    assert_eq!(MlmRun::config_of(&ck, &path).unwrap(), config);
    let mut resumed = MlmRun::resume(&ck, &path, config, specials(), &cpu).unwrap();
    for _ in 0..3 {
        resumed.train_step(&corpus).unwrap();
    }
    assert_eq!(resumed.history, straight.history);
    assert_bit_identical(&straight.model, &resumed.model);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The rows of training batch 0 of a tiny run on the two-book fixture, as `rows` and
/// `contrast` say, without padding.
fn rows_of(rows: Rows, contrast: f64) -> (Corpus, Vec<Vec<u32>>) {
    let (dir, data) = books(&format!("{rows:?}{contrast}"));
    let mut config = tiny(&data, 1);
    let corpus = read_corpus(&config.data, 100, 24, None).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
    config.model.vocab = corpus.tokenizer.vocab_size();
    config.model.max_positions = 24;
    config.batch = 64;
    config.rows = rows;
    config.contrast = contrast;
    let specials = Specials::of(&corpus.tokenizer).unwrap();
    let (b, _, _) = MlmRun::new(config, specials, &Device::cpu()).batch(&corpus, 0);
    let rows = (0..64)
        .map(|i| b.ids[i * b.t..i * b.t + b.lens[i]].to_vec())
        .collect();
    (corpus, rows)
}

/// The starts in reading order from which `row` is the sentences read on, each after the first
/// without its [CLS], and the next one would not fit 24 tokens or is another book's.
fn packed_starts(reading: &[(Vec<u32>, u32)], row: &[u32]) -> Vec<usize> {
    (0..reading.len())
        .filter(|&i| {
            let (mut built, book, mut j) = (reading[i].0.clone(), reading[i].1, i + 1);
            while built.len() < row.len() && j < reading.len() && reading[j].1 == book {
                built.extend(&reading[j].0[1..]);
                j += 1;
            }
            let full = j == reading.len()
                || reading[j].1 != book
                || built.len() + reading[j].0.len() - 1 > 24;
            built == row && full
        })
        .collect()
}

#[test]
fn packed_rows_are_whole_consecutive_sentences_of_one_book_within_the_context() {
    let (corpus, rows) = rows_of(Rows::Packed, 0.0);
    let reading = &corpus.reading;
    let sep = Specials::of(&corpus.tokenizer).unwrap().sep;
    let mut sentences_per_row = Vec::new();
    for row in rows {
        assert!(row.len() <= 24, "a row of {} tokens", row.len());
        assert!(
            !packed_starts(reading, &row).is_empty(),
            "{row:?} is not whole consecutive sentences of one book"
        );
        sentences_per_row.push(row.iter().filter(|&&t| t == sep).count());
    }
    assert!(
        sentences_per_row.iter().any(|&n| n >= 2),
        "no row packed two sentences: {sentences_per_row:?}"
    );
    // Without packing a row is one training sentence.
    let (corpus, rows) = rows_of(Rows::Sentence, 0.0);
    for row in rows {
        assert!(corpus.train.iter().any(|(s, _)| *s == row));
        assert_eq!(row.iter().filter(|&&t| t == sep).count(), 1);
    }
}

#[test]
fn contrastive_pairs_are_packed_rows_from_nearby_in_one_book() {
    let (corpus, rows) = rows_of(Rows::Packed, 1.0);
    let reading = &corpus.reading;
    let (anchors, positives) = rows.split_at(32);
    let mut differ = 0;
    for (a, p) in anchors.iter().zip(positives) {
        let (sa, sp) = (packed_starts(reading, a), packed_starts(reading, p));
        assert!(!sa.is_empty() && !sp.is_empty(), "{a:?} / {p:?} not packed");
        // The fixture repeats its sentences, so a row may begin at several places: some pair
        // of them is one book's, at most ten sentences apart.
        let near = sa.iter().any(|&i| {
            sp.iter()
                .any(|&j| reading[i].1 == reading[j].1 && i != j && i.abs_diff(j) <= 10)
        });
        assert!(near, "{a:?} and {p:?} are not from nearby in one book");
        differ += usize::from(a != p);
    }
    assert!(
        differ >= 16,
        "only {differ} of 32 positives differ from their anchor"
    );
}

fn argv(extra: &[&str]) -> Vec<String> {
    ["bert", "--device", "cpu"]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn a_tiny_run_reports_and_bad_input_names_its_flag() {
    let (dir, data) = books("job");
    let out = dir.join("run").display().to_string();
    let small = [
        "--data",
        &data,
        "--vocab-size",
        "100",
        "--ctx",
        "16",
        "--dim",
        "16",
        "--depth",
        "1",
        "--heads",
        "2",
        "--batch",
        "8",
        "--eval-sentences",
        "60",
    ];
    let done = main_with(argv(
        &[&small[..], &["--steps", "30", "--out", &out]].concat(),
    ))
    .unwrap();
    assert_eq!(done.steps, 30);
    for v in [
        done.masked_accuracy,
        done.unigram_accuracy,
        done.probe,
        done.random_probe,
        done.bag_of_words_probe,
    ] {
        assert!((0.0..=100.0).contains(&v), "{done:?}");
    }
    // Each book has words of its own: bag-of-words tells them apart.
    assert!(done.bag_of_words_probe > 90.0, "{done:?}");
    for f in [
        "checkpoint.safetensors",
        "config.json",
        "loss.png",
        "loss.csv",
    ] {
        assert!(dir.join("run").join(f).exists(), "{f}");
    }
    let ckpt = dir.join("run/checkpoint.safetensors").display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--mask-rate", "1.5"], "--mask-rate"),
        (vec!["--ctx", "4"], "--ctx"),
        (vec!["--contrast=-1"], "--contrast"),
        (vec!["--contrast", "1", "--batch", "7"], "--batch"),
        (vec!["--contrast-tau", "0"], "--contrast-tau"),
        (
            vec!["--validate", "--eval-sentences", "100000"],
            "--eval-sentences",
        ),
        (vec!["--heads", "3"], "--dim"),
        (
            vec!["--data", "/no/such/book.txt,/no/other.txt"],
            "/no/such/book.txt",
        ),
        (vec!["--data", &data[..data.find(',').unwrap()]], "--data"),
        (vec!["--out", &out], "--overwrite"),
        (vec!["--resume", &ckpt, "--dim", "32"], "--dim"),
        (vec!["--resume", &ckpt, "--steps", "10"], "--steps"),
    ];
    for (extra, want) in cases {
        let err = main_with(argv(&[&small[..], &extra].concat()))
            .err()
            .unwrap_or_else(|| panic!("{extra:?} was accepted"));
        assert!(err.contains(want), "{extra:?}: {err}");
        assert!(!err.contains('\n'), "{err}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

fn tiny_bart(data: &str, steps: u64) -> BartRunConfig {
    let mut c = BartRunConfig::defaults();
    c.data = data.into();
    c.vocab_size = 100;
    c.model.max_positions = 24;
    c.model.dim = 16;
    c.model.encoder_depth = 1;
    c.model.decoder_depth = 1;
    c.model.heads = 2;
    c.model.ffn = 32;
    c.steps = steps;
    c.batch = 4;
    c
}

#[test]
fn a_resumed_bart_run_is_bit_identical() {
    let (dir, data) = books("bart-resume");
    let cpu = Device::cpu();
    let mut config = tiny_bart(&data, 6);
    let corpus = read_corpus(&config.data, 100, 24, None).unwrap();
    config.model.vocab = corpus.tokenizer.vocab_size();
    let tk = &corpus.tokenizer;
    let mut straight = BartRun::new(config.clone(), tk, &cpu).unwrap();
    for _ in 0..6 {
        straight.train_step(&corpus.train).unwrap();
    }
    let mut first = BartRun::new(config.clone(), tk, &cpu).unwrap();
    for _ in 0..3 {
        first.train_step(&corpus.train).unwrap();
    }
    let path = dir.join("ck.safetensors");
    first.save(&path, &corpus).unwrap();
    let ck = checkpoint::load(&path).unwrap();
    let mut resumed = BartRun::resume(&ck, &path, config, tk, &cpu).unwrap();
    for _ in 0..3 {
        resumed.train_step(&corpus.train).unwrap();
    }
    assert_eq!(resumed.history, straight.history);
    assert_bit_identical(&straight.model, &resumed.model);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_tiny_bart_run_learns_to_reconstruct_and_bad_input_names_its_flag() {
    let (dir, data) = books("bart-job");
    let out = dir.join("run").display().to_string();
    let small = [
        "bart",
        "--device",
        "cpu",
        "--data",
        &data,
        "--vocab-size",
        "100",
        "--ctx",
        "24",
        "--dim",
        "32",
        "--encoder-depth",
        "1",
        "--decoder-depth",
        "1",
        "--heads",
        "2",
        "--batch",
        "16",
        "--dropout",
        "0",
        "--eval-sentences",
        "40",
    ];
    let run = |extra: &[&str]| {
        selfsup::bart::main_with(small.iter().chain(extra).map(|s| s.to_string()).collect())
    };
    let done = run(&["--steps", "400", "--lr", "3e-3", "--out", &out]).unwrap();
    assert_eq!(done.steps, 400);
    // Eight words per book: copying the visible words and guessing the hidden ones from the
    // book's vocabulary is learnable in 400 steps (measured 86 %; 46 % after 150 steps, mostly
    // "the").
    assert!(done.accuracy > 70.0, "{done:?}");
    assert_eq!(done.examples.len(), 3);
    assert!(done
        .examples
        .iter()
        .all(|(noisy, _, _)| noisy.contains("[MASK]")));
    for f in ["checkpoint.safetensors", "config.json", "loss.png"] {
        assert!(dir.join("run").join(f).exists(), "{f}");
    }
    let ckpt = dir.join("run/checkpoint.safetensors").display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--noise", "shuffle"], "--noise shuffle"),
        (vec!["--noise-ratio", "1.5"], "--noise-ratio"),
        (vec!["--ctx", "8"], "--ctx"),
        (
            vec!["--resume", &ckpt, "--noise", "token-deletion"],
            "--noise",
        ),
    ];
    for (extra, want) in cases {
        let err = run(&extra)
            .err()
            .unwrap_or_else(|| panic!("{extra:?} was accepted"));
        assert!(err.contains(want), "{extra:?}: {err}");
        assert!(!err.contains('\n'), "{err}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
