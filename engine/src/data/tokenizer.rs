//! Text ↔ token ids: characters (the vocabulary is the corpus's own characters) or subwords
//! (a BERT WordPiece `vocab.txt`, or a byte-level BPE trained on the corpus), the latter through
//! Hugging Face's `tokenizers`. A tokenizer serialises to JSON so a checkpoint carries its own.

use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::path::Path;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::AddedToken;
use tokenizers::Normalizer;

/// BERT's uncased pipeline around a WordPiece model: lower-casing and accent stripping,
/// whitespace and punctuation splitting, `##` pieces joined back on decoding.
fn bert_pipeline(model: WordPiece) -> tokenizers::Tokenizer {
    let mut tk = tokenizers::Tokenizer::new(model);
    tk.with_normalizer(Some(BertNormalizer::default()))
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_decoder(Some(WordPieceDecoder::default()));
    tk
}

pub enum Tokenizer {
    /// One id per character, in code-point order.
    Chars(Vec<char>),
    /// A Hugging Face tokenizer (WordPiece or byte-level BPE).
    Subword(Box<tokenizers::Tokenizer>),
}

impl Tokenizer {
    /// The distinct characters of `corpus`, sorted (nanoGPT's `shakespeare_char` vocabulary).
    pub fn chars(corpus: &str) -> Tokenizer {
        let mut chars: Vec<char> = corpus.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        Tokenizer::Chars(chars)
    }

    /// BERT's uncased WordPiece from a `vocab.txt` (one token per line; `[UNK]` for the rest).
    pub fn wordpiece(vocab: &Path) -> Result<Tokenizer> {
        let name = vocab.to_string_lossy();
        let model = WordPiece::from_file(&name)
            .unk_token("[UNK]".into())
            .build()
            .map_err(|e| Error::format(vocab, format!("not a WordPiece vocabulary: {e}")))?;
        Ok(Tokenizer::Subword(Box::new(bert_pipeline(model))))
    }

    /// A byte-level BPE of `vocab_size` tokens learnt from `corpus` (GPT-2's scheme: any text
    /// encodes, and decoding gives it back byte for byte).
    pub fn train_bpe(corpus: &str, vocab_size: usize) -> std::result::Result<Tokenizer, String> {
        let byte_level = ByteLevel::new(false, true, true);
        let mut tk = tokenizers::Tokenizer::new(BPE::default());
        tk.with_pre_tokenizer(Some(byte_level))
            .with_decoder(Some(byte_level));
        let mut trainer: TrainerWrapper = BpeTrainer::builder()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build()
            .into();
        // Lines as training sequences; words never cross a newline anyway.
        tk.train(&mut trainer, corpus.lines())
            .map_err(|e| format!("training a BPE vocabulary: {e}"))?;
        Ok(Tokenizer::Subword(Box::new(tk)))
    }

    /// BERT's uncased WordPiece of `vocab_size` entries learnt from `corpus` (one sequence per
    /// line), with `[PAD]`, `[UNK]`, `[CLS]`, `[SEP]` and `[MASK]` as ids 0–4.
    pub fn train_wordpiece(
        corpus: &str,
        vocab_size: usize,
    ) -> std::result::Result<Tokenizer, String> {
        let special =
            ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].map(|t| AddedToken::from(t, true));
        // The trainer numbers the `##c` pieces in hash-map order, and merges of equal count are
        // taken in id order, so two trainings on one corpus gave different vocabularies. Seeding
        // every `##c` in character order (as ids 5…) makes the result a function of the corpus.
        let normalizer = BertNormalizer::default();
        let mut chars = std::collections::BTreeSet::new();
        for line in corpus.lines() {
            let mut n = tokenizers::NormalizedString::from(line);
            normalizer
                .normalize(&mut n)
                .map_err(|e| format!("training a WordPiece vocabulary: {e}"))?;
            chars.extend(n.get().chars().filter(|c| !c.is_whitespace()));
        }
        let seeded = chars
            .iter()
            .map(|c| AddedToken::from(format!("##{c}"), true));
        let mut trainer: TrainerWrapper = WordPieceTrainer::builder()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(special.iter().cloned().chain(seeded).collect())
            .build()
            .into();
        let mut tk = bert_pipeline(WordPiece::default());
        tk.train(&mut trainer, corpus.lines())
            .map_err(|e| format!("training a WordPiece vocabulary: {e}"))?;
        // A fresh tokenizer over the learnt vocabulary: the seeded pieces are ordinary entries,
        // not special tokens split out of the input.
        let vocab: tokenizers::models::bpe::Vocab = tk.get_vocab(false).into_iter().collect();
        let model = WordPiece::builder()
            .vocab(vocab)
            .unk_token("[UNK]".into())
            .build()
            .map_err(|e| format!("training a WordPiece vocabulary: {e}"))?;
        let mut tk = bert_pipeline(model);
        tk.add_special_tokens(&special);
        Ok(Tokenizer::Subword(Box::new(tk)))
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Chars(c) => c.len(),
            Tokenizer::Subword(tk) => tk.get_vocab_size(true),
        }
    }

    /// The ids of `text`; an error names a character the vocabulary lacks.
    pub fn encode(&self, text: &str) -> std::result::Result<Vec<u32>, String> {
        match self {
            Tokenizer::Chars(chars) => text
                .chars()
                .map(|c| {
                    chars
                        .binary_search(&c)
                        .map(|i| i as u32)
                        .map_err(|_| format!("the character {c:?} is not in the vocabulary"))
                })
                .collect(),
            Tokenizer::Subword(tk) => tk
                .encode(text, false)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| format!("cannot tokenize: {e}")),
        }
    }

    /// The id of one vocabulary entry (`[CLS]`, `[PAD]`, a character), if it has one.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        match self {
            Tokenizer::Chars(chars) => {
                let mut it = token.chars();
                match (it.next(), it.next()) {
                    (Some(c), None) => chars.binary_search(&c).ok().map(|i| i as u32),
                    _ => None,
                }
            }
            Tokenizer::Subword(tk) => tk.token_to_id(token),
        }
    }

    /// The text of `ids` (ids outside the vocabulary are skipped).
    pub fn decode(&self, ids: &[u32]) -> String {
        match self {
            Tokenizer::Chars(chars) => ids.iter().filter_map(|&i| chars.get(i as usize)).collect(),
            Tokenizer::Subword(tk) => tk.decode(ids, false).unwrap_or_default(),
        }
    }

    /// `{"kind": "chars", "chars": …}` or `{"kind": "subword", "tokenizer": <HF JSON>}`.
    pub fn to_json(&self) -> String {
        match self {
            Tokenizer::Chars(chars) => {
                json!({"kind": "chars", "chars": chars.iter().collect::<String>()}).to_string()
            }
            Tokenizer::Subword(tk) => {
                let inner: Value =
                    serde_json::from_str(&tk.to_string(false).expect("a tokenizer serialises"))
                        .expect("tokenizers writes JSON");
                json!({"kind": "subword", "tokenizer": inner}).to_string()
            }
        }
    }

    pub fn from_json(text: &str) -> std::result::Result<Tokenizer, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("tokenizer: {e}"))?;
        match v["kind"].as_str() {
            Some("chars") => {
                let chars: Vec<char> = v["chars"]
                    .as_str()
                    .ok_or("tokenizer: no \"chars\"")?
                    .chars()
                    .collect();
                if chars.is_empty() || chars.windows(2).any(|w| w[0] >= w[1]) {
                    return Err("tokenizer: \"chars\" must be distinct and sorted".into());
                }
                Ok(Tokenizer::Chars(chars))
            }
            Some("subword") => {
                let tk: tokenizers::Tokenizer = v["tokenizer"]
                    .to_string()
                    .parse()
                    .map_err(|e| format!("tokenizer: {e}"))?;
                Ok(Tokenizer::Subword(Box::new(tk)))
            }
            other => Err(format!("tokenizer: unknown kind {other:?}")),
        }
    }

    /// What kind of vocabulary this is, for reports.
    pub fn describe(&self) -> String {
        match self {
            Tokenizer::Chars(c) => format!("{} characters", c.len()),
            Tokenizer::Subword(tk) => format!("{} subwords", tk.get_vocab_size(true)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chars_round_trip_and_known_ids() {
        let tk = Tokenizer::chars("hello world");
        assert_eq!(tk.vocab_size(), 8); // ' ' d e h l o r w
        assert_eq!(tk.encode("hello").unwrap(), vec![3, 2, 4, 4, 5]);
        assert_eq!(tk.decode(&tk.encode("world hello").unwrap()), "world hello");
        let e = tk.encode("hex").unwrap_err();
        assert!(e.contains("'x'"), "{e}");
        let back = Tokenizer::from_json(&tk.to_json()).unwrap();
        assert_eq!(
            back.encode("lowered").unwrap(),
            tk.encode("lowered").unwrap()
        );
    }

    #[test]
    fn bpe_round_trips_any_text() {
        let corpus = "the cat sat on the mat. the cat ate the rat.\n".repeat(50);
        let tk = Tokenizer::train_bpe(&corpus, 300).unwrap();
        assert!(
            tk.vocab_size() > 256 && tk.vocab_size() <= 300,
            "{}",
            tk.vocab_size()
        );
        let text = "the cat — sat on ünïcode 🙂 mat";
        let ids = tk.encode(text).unwrap();
        assert_eq!(tk.decode(&ids), text);
        // Merges learnt: a frequent word is fewer tokens than its bytes.
        assert!(tk.encode(" the").unwrap().len() < 4);
        let back = Tokenizer::from_json(&tk.to_json()).unwrap();
        assert_eq!(back.encode(text).unwrap(), ids);
    }

    #[test]
    fn wordpiece_splits_words_into_known_pieces() {
        let dir = std::env::temp_dir().join(format!("selfsup-wp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let vocab = dir.join("vocab.txt");
        std::fs::write(&vocab, "[PAD]\n[UNK]\nthe\nplay\n##ing\n##ed\n,\n").unwrap();
        let tk = Tokenizer::wordpiece(&vocab).unwrap();
        // Lower-cased, split on punctuation, greedy longest-match pieces.
        assert_eq!(
            tk.encode("The playing, PLAYED xyz").unwrap(),
            vec![2, 3, 4, 6, 3, 5, 1]
        );
        assert_eq!(tk.decode(&[2, 3, 4]), "the playing");
        let back = Tokenizer::from_json(&tk.to_json()).unwrap();
        assert_eq!(back.encode("played").unwrap(), vec![3, 5]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_trained_wordpiece_has_berts_special_ids_and_round_trips() {
        let corpus = "The playing cat played with the players.\nA cat is playing!\n".repeat(30);
        let tk = Tokenizer::train_wordpiece(&corpus, 120).unwrap();
        let ids: Vec<Option<u32>> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
            .iter()
            .map(|t| tk.token_id(t))
            .collect();
        assert_eq!(ids, [0, 1, 2, 3, 4].map(Some));
        let text = "a cat is playing with the players!";
        assert_eq!(tk.decode(&tk.encode(text).unwrap()), text);
        let back = Tokenizer::from_json(&tk.to_json()).unwrap();
        assert_eq!(back.encode(text).unwrap(), tk.encode(text).unwrap());
    }

    #[test]
    fn training_a_wordpiece_twice_gives_the_same_ids() {
        // The trainer numbers `##c` pieces in hash-map order and breaks ties between merges by
        // id: unseeded, two trainings on this corpus learnt different vocabularies.
        let corpus = "Elizabeth, Darcy and Ahab: 1811, 1813; quiz-like jumps!\n".repeat(20);
        let vocab = |tk: &Tokenizer| match tk {
            Tokenizer::Subword(tk) => {
                let mut v: Vec<(String, u32)> = tk.get_vocab(true).into_iter().collect();
                v.sort();
                v
            }
            Tokenizer::Chars(_) => unreachable!(),
        };
        let first = vocab(&Tokenizer::train_wordpiece(&corpus, 150).unwrap());
        for _ in 0..3 {
            assert_eq!(
                vocab(&Tokenizer::train_wordpiece(&corpus, 150).unwrap()),
                first
            );
        }
    }

    #[test]
    fn refuses_bad_json() {
        assert!(Tokenizer::from_json("{}").is_err());
        assert!(Tokenizer::from_json(r#"{"kind":"chars","chars":"ba"}"#).is_err());
        assert!(Tokenizer::from_json("not json").is_err());
    }
}
