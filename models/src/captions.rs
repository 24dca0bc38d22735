//! Captions for CLIP, made from the data because no image–caption corpus ships here: a class
//! name in one of several templates, with attributes measured from the image itself (how large
//! the shape is, how bright its ink, which way a digit leans) so that captions differ between
//! images of one class. Evaluation uses templates that training never sees.
//!
//! Words map to ids through a fixed vocabulary: every word any template, class name or attribute
//! can produce, so a checkpoint needs nothing besides its config to read its own captions.

use crate::views::Recipe;
use rand::Rng;
use selfsup_engine::SeededRng;

/// Padding after a caption's end.
pub const PAD: u32 = 0;
/// The end-of-text token whose output the text tower pools (CLIP's `[EOS]`).
pub const EOT: u32 = 1;
/// A word outside the vocabulary (a user's prompt may hold one).
pub const UNK: u32 = 2;
/// Ids below this are the special tokens; words follow, sorted.
const SPECIAL: usize = 3;
/// The most tokens a caption has, end-of-text included (the text tower's context).
pub const CONTEXT: usize = 16;

/// Slots in a template: `{c}` the class name, `{size}`, `{tone}` and `{lean}` the attributes.
const DIGIT_TRAIN: [&str; 9] = [
    "a photo of the digit {c}",
    "a handwritten {c}",
    "the number {c}",
    "a {size} {c}",
    "a {tone} {c}",
    "a {size} , {tone} digit {c}",
    "a handwritten {c} {lean}",
    "a photo of a {size} {c} {lean}",
    "the digit {c} , {tone} and {size}",
];
/// Zero-shot prompts: no attribute slots, and never seen in training.
const DIGIT_PROMPTS: [&str; 4] = [
    "a picture of the number {c}",
    "an image of a handwritten {c}",
    "the digit {c}",
    "a drawing of the digit {c}",
];
/// Held-out captions with attributes, for retrieval.
const DIGIT_HELD_OUT: [&str; 3] = [
    "a picture of a {size} {c} {lean}",
    "a drawing of a {tone} , {size} number {c}",
    "an image of the digit {c} {lean} , {tone}",
];
const DIGITS: [&[&str]; 10] = [
    &["zero", "0"],
    &["one", "1"],
    &["two", "2"],
    &["three", "3"],
    &["four", "4"],
    &["five", "5"],
    &["six", "6"],
    &["seven", "7"],
    &["eight", "8"],
    &["nine", "9"],
];

const CLOTHES_TRAIN: [&str; 7] = [
    "a photo of a {c}",
    "a {c}",
    "a {size} {c}",
    "a {tone} {c}",
    "a product photo of a {tone} {c}",
    "a {size} , {tone} {c}",
    "a photo of the {c} , {size}",
];
const CLOTHES_PROMPTS: [&str; 4] = [
    "a picture of a {c}",
    "an image of the {c}",
    "the {c}",
    "a close-up photo of a {c}",
];
const CLOTHES_HELD_OUT: [&str; 3] = [
    "a picture of a {size} {tone} {c}",
    "an image of the {tone} {c} , {size}",
    "a close-up photo of a {size} {c}",
];
/// Fashion-MNIST's classes in label order, each with the names a caption may use.
const CLOTHES: [&[&str]; 10] = [
    &["t-shirt", "top"],
    &["trousers", "pants"],
    &["pullover", "sweater"],
    &["dress"],
    &["coat", "jacket"],
    &["sandal"],
    &["shirt"],
    &["sneaker", "trainer"],
    &["bag", "handbag"],
    &["ankle boot", "boot"],
];

/// What a caption says about one image besides its class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attributes {
    pub large: bool,
    pub bright: bool,
    /// −1 leaning left, 0 upright, 1 leaning right.
    pub lean: i8,
}

/// The caption grammar of one image family.
#[derive(Clone, Debug)]
pub struct Captioner {
    family: Recipe,
    vocab: Vec<String>,
}

impl Captioner {
    pub fn new(family: Recipe) -> Captioner {
        let mut c = Captioner {
            family,
            vocab: Vec::new(),
        };
        let tones = c.tones();
        let attributes = ["small", "large", "upright", "leaning left", "leaning right"];
        let texts = [Split::Train, Split::Prompts, Split::HeldOut]
            .iter()
            .flat_map(|&s| c.templates(s).iter())
            .chain(c.names().iter().flat_map(|n| n.iter()))
            .chain(attributes.iter())
            .chain(tones.iter());
        let mut words: Vec<String> = texts
            .flat_map(|t| split(t))
            .filter(|w| !w.starts_with('{'))
            .collect();
        words.sort();
        words.dedup();
        // Ids follow the special tokens' constants, then the sorted words.
        c.vocab = ["<pad>", "<eot>", "<unk>"].map(String::from).to_vec();
        c.vocab.extend(words);
        c
    }

    /// Words the text tower embeds (the three special tokens first).
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// Classes the family names.
    pub fn classes(&self) -> usize {
        self.names().len()
    }

    fn names(&self) -> &'static [&'static [&'static str]] {
        match self.family {
            Recipe::Digits => &DIGITS,
            Recipe::Clothes => &CLOTHES,
        }
    }

    fn tones(&self) -> [&'static str; 2] {
        match self.family {
            Recipe::Digits => ["faint", "bright"],
            Recipe::Clothes => ["dark", "light"],
        }
    }

    pub fn templates(&self, split: Split) -> &'static [&'static str] {
        match (self.family, split) {
            (Recipe::Digits, Split::Train) => &DIGIT_TRAIN,
            (Recipe::Digits, Split::Prompts) => &DIGIT_PROMPTS,
            (Recipe::Digits, Split::HeldOut) => &DIGIT_HELD_OUT,
            (Recipe::Clothes, Split::Train) => &CLOTHES_TRAIN,
            (Recipe::Clothes, Split::Prompts) => &CLOTHES_PROMPTS,
            (Recipe::Clothes, Split::HeldOut) => &CLOTHES_HELD_OUT,
        }
    }

    /// The attributes of a square grey image (`side²` values in [0, 1]), from the pixels above
    /// 0.3: their share of the image (size), their mean value (tone), and the shear of their
    /// second moments (lean: beyond ±0.1 pixel of x per pixel of y; MNIST's median digit leans
    /// right by 0.125). Size and tone split at the medians measured on the training sets
    /// (MNIST: 0.148 area, 0.827 tone; Fashion-MNIST: 0.393, 0.699).
    pub fn attributes(&self, pixels: &[f32], side: usize) -> Attributes {
        let (area_median, tone_median) = match self.family {
            Recipe::Digits => (0.148, 0.827),
            Recipe::Clothes => (0.393, 0.699),
        };
        let (mut on, mut tone, mut mass) = (0.0f64, 0.0f64, 0.0f64);
        let (mut sy, mut sx) = (0.0f64, 0.0f64);
        for (i, &v) in pixels.iter().enumerate().take(side * side) {
            let v = v as f64;
            if v > 0.3 {
                on += 1.0;
                tone += v;
            }
            mass += v;
            sy += v * (i / side) as f64;
            sx += v * (i % side) as f64;
        }
        let (cy, cx) = (sy / mass.max(1e-9), sx / mass.max(1e-9));
        let (mut m11, mut m02) = (0.0f64, 0.0f64);
        for (i, &v) in pixels.iter().enumerate().take(side * side) {
            let (dy, dx) = ((i / side) as f64 - cy, (i % side) as f64 - cx);
            m11 += v as f64 * dy * dx;
            m02 += v as f64 * dy * dy;
        }
        // A stroke whose top lies to the right ("/") has x falling as y grows: m11 < 0.
        let shear = -m11 / m02.max(1e-9);
        Attributes {
            large: on / (side * side) as f64 > area_median,
            bright: tone / on.max(1.0) > tone_median,
            lean: if shear < -0.1 {
                -1
            } else if shear > 0.1 {
                1
            } else {
                0
            },
        }
    }

    /// `template` filled in for class `label` under its `name`-th name and `a`.
    pub fn fill(&self, template: &str, label: u32, name: usize, a: Attributes) -> String {
        let names = self.names()[label as usize];
        let tone = self.tones()[a.bright as usize];
        let lean = ["leaning left", "upright", "leaning right"][(a.lean + 1) as usize];
        template
            .replace("{c}", names[name % names.len()])
            .replace("{size}", if a.large { "large" } else { "small" })
            .replace("{tone}", tone)
            .replace("{lean}", lean)
    }

    /// A random caption of `split` for an image of class `label` with `pixels`.
    pub fn caption(
        &self,
        split: Split,
        label: u32,
        pixels: &[f32],
        side: usize,
        rng: &mut SeededRng,
    ) -> String {
        let templates = self.templates(split);
        let t = templates[rng.random_range(0..templates.len())];
        let name = rng.random_range(0..self.names()[label as usize].len());
        self.fill(t, label, name, self.attributes(pixels, side))
    }

    /// Every class's prompts from the held-out zero-shot templates, under each of its names:
    /// `prompts[class]` is the list CLIP's prompt ensemble averages.
    pub fn class_prompts(&self) -> Vec<Vec<String>> {
        let plain = Attributes {
            large: false,
            bright: false,
            lean: 0,
        };
        (0..self.classes() as u32)
            .map(|c| {
                let names = self.names()[c as usize].len();
                self.templates(Split::Prompts)
                    .iter()
                    .flat_map(|t| (0..names).map(move |n| (t, n)))
                    .map(|(t, n)| self.fill(t, c, n, plain))
                    .collect()
            })
            .collect()
    }

    /// Ids of `text`'s words followed by the end-of-text token; unknown words are [`UNK`].
    /// `Err` when it needs more than [`CONTEXT`] tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        let mut ids: Vec<u32> = split(text)
            .iter()
            .map(|w| {
                self.vocab[SPECIAL..]
                    .binary_search_by(|v| v.as_str().cmp(w))
                    .map_or(UNK, |i| (SPECIAL + i) as u32)
            })
            .collect();
        ids.push(EOT);
        if ids.len() > CONTEXT {
            return Err(format!(
                "caption {text:?} has {} tokens, more than the text tower's {CONTEXT}",
                ids.len()
            ));
        }
        Ok(ids)
    }

    /// Captions as one `(B, T)` batch padded to the longest, with each caption's length.
    pub fn batch(&self, texts: &[String]) -> Tokens {
        let encoded: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| self.encode(t).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let t = encoded.iter().map(Vec::len).max().unwrap_or(1);
        let mut ids = vec![PAD; texts.len() * t];
        for (row, e) in encoded.iter().enumerate() {
            ids[row * t..row * t + e.len()].copy_from_slice(e);
        }
        Tokens {
            lens: encoded.iter().map(Vec::len).collect(),
            ids,
            t,
        }
    }
}

/// Which templates: training captions, zero-shot prompts, or held-out captions for retrieval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Prompts,
    HeldOut,
}

/// Token ids of a batch of captions, `(B, T)` row-major, padded with [`PAD`].
#[derive(Clone, Debug, PartialEq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    /// Tokens of each caption, its end-of-text included.
    pub lens: Vec<usize>,
    /// Positions per row.
    pub t: usize,
}

/// Lower-case words, a comma being a word of its own.
fn split(text: &str) -> Vec<String> {
    text.to_lowercase()
        .replace(',', " , ")
        .split_whitespace()
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn every_caption_and_prompt_is_known_words() {
        for family in [Recipe::Digits, Recipe::Clothes] {
            let c = Captioner::new(family);
            let img = vec![0.5f32; 784];
            let mut rng = SeededRng::seed_from_u64(1);
            for label in 0..10 {
                for split in [Split::Train, Split::HeldOut] {
                    let text = c.caption(split, label, &img, 28, &mut rng);
                    let ids = c.encode(&text).unwrap();
                    assert!(!ids.contains(&UNK), "{text:?} has unknown words");
                    assert_eq!(*ids.last().unwrap(), EOT);
                }
            }
            assert_eq!(c.encode("a zebra").unwrap()[1], UNK);
        }
    }

    #[test]
    fn held_out_templates_are_not_training_templates() {
        for family in [Recipe::Digits, Recipe::Clothes] {
            let c = Captioner::new(family);
            let train = c.templates(Split::Train);
            for t in c
                .templates(Split::Prompts)
                .iter()
                .chain(c.templates(Split::HeldOut))
            {
                assert!(!train.contains(t), "{t:?} is also a training template");
            }
        }
    }

    #[test]
    fn attributes_follow_the_image() {
        let c = Captioner::new(Recipe::Digits);
        // A bright "/" stroke on a 10×10 image: top right to bottom left.
        let mut img = vec![0.0f32; 100];
        for y in 0..10 {
            img[y * 10 + 9 - y] = 1.0;
        }
        let a = c.attributes(&img, 10);
        assert_eq!((a.lean, a.bright, a.large), (1, true, false));
        // Mirrored, it leans the other way.
        let mirrored: Vec<f32> = (0..100).map(|i| img[i / 10 * 10 + 9 - i % 10]).collect();
        assert_eq!(c.attributes(&mirrored, 10).lean, -1);
        // A faint, filled square is large.
        let a = c.attributes(&[0.5f32; 100], 10);
        assert_eq!((a.large, a.bright), (true, false));
    }
}
