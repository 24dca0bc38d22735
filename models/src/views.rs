//! View recipes: the augmentations that define what a method must be invariant to, as data.
//! The engine keeps the transforms; which ones, how strong and how often is a modelling choice.

use selfsup_engine::data::{Augment, Transform};
use serde::{Deserialize, Serialize};

/// Which family of images the views are made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Recipe {
    /// Handwritten digits: never flipped (a mirrored digit is another symbol or none), small
    /// rotations and shifts that mimic handwriting.
    Digits,
    /// Clothes (Fashion-MNIST): a mirrored shirt is still a shirt, so horizontal flips are in;
    /// no rotation (garments are photographed upright).
    Clothes,
}

impl std::str::FromStr for Recipe {
    type Err = String;
    fn from_str(s: &str) -> Result<Recipe, String> {
        match s {
            "digits" => Ok(Recipe::Digits),
            "clothes" => Ok(Recipe::Clothes),
            _ => Err(format!("unknown recipe {s:?} (expected digits or clothes)")),
        }
    }
}

/// The base recipe of a run, which methods vary per view (BYOL's asymmetric blur/solarize).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewsConfig {
    pub recipe: Recipe,
    /// Smallest area fraction a random crop keeps.
    pub crop_min: f64,
    /// Whether methods with BYOL's asymmetric pair blur and solarise their views (false: both
    /// views use the base recipe, an ablation). Runs saved before the flag existed had them.
    #[serde(default = "asymmetric_default")]
    pub asymmetric: bool,
}

fn asymmetric_default() -> bool {
    true
}

impl ViewsConfig {
    /// The recipe at `size`×`size`: crop, then the family's geometric and photometric jitter.
    pub fn base(&self, size: usize) -> Augment {
        self.base_at(size, (self.crop_min as f32, 1.0))
    }

    /// The base recipe with crops keeping an area fraction in `scale`.
    fn base_at(&self, size: usize, scale: (f32, f32)) -> Augment {
        let jitter = Transform::ColorJitter {
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.0,
            hue: 0.0,
        };
        let geometric = match self.recipe {
            // ±15° rotation, 10 % shift and ±10 % zoom after the crop (flips come with `crop`).
            Recipe::Digits => self.crop_at(size, scale).then(Transform::RandomAffine {
                degrees: 15.0,
                translate: (0.1, 0.1),
                scale: (0.9, 1.1),
            }),
            Recipe::Clothes => self.crop_at(size, scale),
        };
        // Ink varies (jitter), and noise stops the model keying on exact pixel values.
        geometric
            .maybe(0.8, jitter)
            .maybe(0.5, Transform::GaussianNoise { std: 0.05 })
    }

    /// MAE's minimal recipe at `size`×`size`: the random crop, and flips where the family allows
    /// them; no jitter or noise (masking is the task).
    pub fn crop(&self, size: usize) -> Augment {
        self.crop_at(size, (self.crop_min as f32, 1.0))
    }

    fn crop_at(&self, size: usize, scale: (f32, f32)) -> Augment {
        let crop = Augment::new().then(Transform::RandomResizedCrop {
            size: (size, size),
            scale,
            ratio: (3.0 / 4.0, 4.0 / 3.0),
        });
        match self.recipe {
            Recipe::Digits => crop,
            Recipe::Clothes => crop.maybe(0.5, Transform::HorizontalFlip),
        }
    }

    /// DINO's multi-crop: two global views of the base recipe at `size`, then `locals` views at
    /// `local_size` cropped from 5 % up to `--crop-min` of the area (the paper's split at 0.4).
    pub fn multi_crop(&self, size: usize, local_size: usize, locals: usize) -> Vec<Augment> {
        let local = self.base_at(local_size, (0.05, self.crop_min as f32));
        let mut v = vec![self.base(size), self.base(size)];
        v.extend((0..locals).map(|_| local.clone()));
        v
    }

    /// Two views of one recipe (SimCLR, SimSiam, MoCo v2).
    pub fn pair(&self, size: usize) -> Vec<Augment> {
        vec![self.base(size), self.base(size)]
    }

    /// BYOL's asymmetric pair (also MoCo v3's and Barlow Twins'): view 1 always blurred, view 2
    /// rarely blurred and sometimes solarised.
    pub fn byol_pair(&self, size: usize) -> Vec<Augment> {
        if !self.asymmetric {
            return self.pair(size);
        }
        vec![self.blurred(size, 1.0, 0.0), self.blurred(size, 0.1, 0.2)]
    }

    /// The base recipe plus blur and solarisation with the given probabilities: BYOL's view 1
    /// (blur 1.0, solarize 0) and view 2 (blur 0.1, solarize 0.2), Grill et al. 2020, table 6.
    /// Digits are never solarised: their strokes are the only bright pixels, and inverting them
    /// leaves a near-blank image that no other view could be predicted from.
    pub fn blurred(&self, size: usize, blur: f32, solarize: f32) -> Augment {
        let aug = self
            .base(size)
            .maybe(blur, Transform::GaussianBlur { sigma: (0.1, 2.0) });
        match self.recipe {
            Recipe::Digits => aug,
            Recipe::Clothes => aug.maybe(solarize, Transform::Solarize { threshold: 0.5 }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use selfsup_engine::data::Image;
    use selfsup_engine::SeededRng;

    /// Fraction of augmented copies of a left-bright, right-dark image that stay brighter on the
    /// left.
    fn left_heavy_fraction(aug: &Augment) -> f32 {
        let img = Image::new(
            1,
            28,
            28,
            (0..784)
                .map(|i| if i % 28 < 14 { 1.0 } else { 0.0 })
                .collect(),
        );
        let mut r = SeededRng::seed_from_u64(21);
        let trials = 400;
        let left_heavy = (0..trials)
            .filter(|_| {
                let out = aug.apply(&img, &mut r);
                let (left, right) =
                    out.data
                        .iter()
                        .enumerate()
                        .fold((0.0, 0.0), |(l, r), (i, v)| {
                            if i % 28 < 14 {
                                (l + v, r)
                            } else {
                                (l, r + v)
                            }
                        });
                left > right
            })
            .count();
        left_heavy as f32 / trials as f32
    }

    #[test]
    fn digits_never_flip_and_clothes_do() {
        let digits = ViewsConfig {
            recipe: Recipe::Digits,
            crop_min: 0.4,
            asymmetric: true,
        };
        let clothes = ViewsConfig {
            recipe: Recipe::Clothes,
            ..digits.clone()
        };
        // Crops keep at least 15 of 28 columns and rotations are small, so the bright half stays
        // on the left unless the recipe mirrors.
        let kept = left_heavy_fraction(&digits.base(28));
        let flipped = left_heavy_fraction(&clothes.base(28));
        assert!(kept > 0.9, "{kept}");
        assert!(flipped < 0.7, "{flipped}");
    }

    #[test]
    fn recipes_are_seeded_and_keep_the_size() {
        let cfg = ViewsConfig {
            recipe: Recipe::Digits,
            crop_min: 0.4,
            asymmetric: true,
        };
        let img = Image::new(1, 28, 28, (0..784).map(|i| (i % 7) as f32 / 7.0).collect());
        for aug in [
            cfg.base(28),
            cfg.blurred(28, 1.0, 0.0),
            cfg.blurred(12, 0.1, 0.2),
        ] {
            let a = aug.apply(&img, &mut SeededRng::seed_from_u64(3));
            assert_eq!(a, aug.apply(&img, &mut SeededRng::seed_from_u64(3)));
            assert_ne!(a, aug.apply(&img, &mut SeededRng::seed_from_u64(4)));
            assert!(a.data.iter().all(|v| (0.0..=1.0).contains(v)));
        }
    }
}
