//! Tiny PNG charts: lines (training curves), scatters (embeddings) and grouped bars (results).
//!
//! Deliberately self-contained: text comes from an embedded 5×7 bitmap font rather than a font
//! stack (plotters/fontconfig), so charts render identically on headless CI machines without fonts.

use std::io;
use std::path::Path;

/// One named polyline; non-finite points (and non-positive `y` on log charts) are skipped.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart with a title, axis labels and a legend.
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Plot `y` on a log10 axis (ticks at whole decades), e.g. for losses spanning magnitudes.
    pub log_y: bool,
    /// How points are drawn.
    pub kind: Kind,
}

/// How a chart draws its series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Points joined in order.
    Line,
    /// A dot per point, one colour a series.
    Scatter,
    /// A bar from 0 per point, the series side by side around each x (grouped bars).
    Bars,
}

type Rgb = [u8; 3];
const WHITE: Rgb = [255, 255, 255];
const BLACK: Rgb = [0, 0, 0];
const GRID: Rgb = [225, 225, 225];
/// Series colours (Tableau 10), cycled; distinct hues that stay apart in greyscale-ish prints.
const PALETTE: [Rgb; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

/// 5×7 glyphs (plus an 8th row for g/j/p/q/y descenders), one byte per column, bit 0 = top row.
#[rustfmt::skip]
const FONT: [(char, [u8; 5]); 74] = [
    (' ', [0x00, 0x00, 0x00, 0x00, 0x00]), ('.', [0x00, 0x60, 0x60, 0x00, 0x00]), ('-', [0x08, 0x08, 0x08, 0x08, 0x08]),
    ('+', [0x08, 0x08, 0x3E, 0x08, 0x08]), ('%', [0x23, 0x13, 0x08, 0x64, 0x62]), ('/', [0x20, 0x10, 0x08, 0x04, 0x02]),
    (':', [0x00, 0x36, 0x36, 0x00, 0x00]), ('(', [0x00, 0x1C, 0x22, 0x41, 0x00]), (')', [0x00, 0x41, 0x22, 0x1C, 0x00]),
    ('_', [0x40, 0x40, 0x40, 0x40, 0x40]), ('=', [0x14, 0x14, 0x14, 0x14, 0x14]), (',', [0x00, 0x50, 0x30, 0x00, 0x00]),
    ('0', [0x3E, 0x51, 0x49, 0x45, 0x3E]), ('1', [0x00, 0x42, 0x7F, 0x40, 0x00]), ('2', [0x42, 0x61, 0x51, 0x49, 0x46]),
    ('3', [0x21, 0x41, 0x45, 0x4B, 0x31]), ('4', [0x18, 0x14, 0x12, 0x7F, 0x10]), ('5', [0x27, 0x45, 0x45, 0x45, 0x39]),
    ('6', [0x3C, 0x4A, 0x49, 0x49, 0x30]), ('7', [0x01, 0x71, 0x09, 0x05, 0x03]), ('8', [0x36, 0x49, 0x49, 0x49, 0x36]),
    ('9', [0x06, 0x49, 0x49, 0x29, 0x1E]), ('A', [0x7E, 0x11, 0x11, 0x11, 0x7E]), ('B', [0x7F, 0x49, 0x49, 0x49, 0x36]),
    ('C', [0x3E, 0x41, 0x41, 0x41, 0x22]), ('D', [0x7F, 0x41, 0x41, 0x22, 0x1C]), ('E', [0x7F, 0x49, 0x49, 0x49, 0x41]),
    ('F', [0x7F, 0x09, 0x09, 0x01, 0x01]), ('G', [0x3E, 0x41, 0x41, 0x51, 0x32]), ('H', [0x7F, 0x08, 0x08, 0x08, 0x7F]),
    ('I', [0x00, 0x41, 0x7F, 0x41, 0x00]), ('J', [0x20, 0x40, 0x41, 0x3F, 0x01]), ('K', [0x7F, 0x08, 0x14, 0x22, 0x41]),
    ('L', [0x7F, 0x40, 0x40, 0x40, 0x40]), ('M', [0x7F, 0x02, 0x04, 0x02, 0x7F]), ('N', [0x7F, 0x04, 0x08, 0x10, 0x7F]),
    ('O', [0x3E, 0x41, 0x41, 0x41, 0x3E]), ('P', [0x7F, 0x09, 0x09, 0x09, 0x06]), ('Q', [0x3E, 0x41, 0x51, 0x21, 0x5E]),
    ('R', [0x7F, 0x09, 0x19, 0x29, 0x46]), ('S', [0x46, 0x49, 0x49, 0x49, 0x31]), ('T', [0x01, 0x01, 0x7F, 0x01, 0x01]),
    ('U', [0x3F, 0x40, 0x40, 0x40, 0x3F]), ('V', [0x1F, 0x20, 0x40, 0x20, 0x1F]), ('W', [0x7F, 0x20, 0x18, 0x20, 0x7F]),
    ('X', [0x63, 0x14, 0x08, 0x14, 0x63]), ('Y', [0x03, 0x04, 0x78, 0x04, 0x03]), ('Z', [0x61, 0x51, 0x49, 0x45, 0x43]),
    ('a', [0x20, 0x54, 0x54, 0x54, 0x78]), ('b', [0x7F, 0x48, 0x44, 0x44, 0x38]), ('c', [0x38, 0x44, 0x44, 0x44, 0x20]),
    ('d', [0x38, 0x44, 0x44, 0x48, 0x7F]), ('e', [0x38, 0x54, 0x54, 0x54, 0x18]), ('f', [0x08, 0x7E, 0x09, 0x01, 0x02]),
    ('g', [0x18, 0xA4, 0xA4, 0xA4, 0x7C]), ('h', [0x7F, 0x08, 0x04, 0x04, 0x78]), ('i', [0x00, 0x44, 0x7D, 0x40, 0x00]),
    ('j', [0x40, 0x80, 0x84, 0x7D, 0x00]), ('k', [0x7F, 0x10, 0x28, 0x44, 0x00]), ('l', [0x00, 0x41, 0x7F, 0x40, 0x00]),
    ('m', [0x7C, 0x04, 0x18, 0x04, 0x78]), ('n', [0x7C, 0x08, 0x04, 0x04, 0x78]), ('o', [0x38, 0x44, 0x44, 0x44, 0x38]),
    ('p', [0xFC, 0x24, 0x24, 0x24, 0x18]), ('q', [0x18, 0x24, 0x24, 0x24, 0xFC]), ('r', [0x7C, 0x08, 0x04, 0x04, 0x08]),
    ('s', [0x48, 0x54, 0x54, 0x54, 0x20]), ('t', [0x04, 0x3F, 0x44, 0x40, 0x20]), ('u', [0x3C, 0x40, 0x40, 0x20, 0x7C]),
    ('v', [0x1C, 0x20, 0x40, 0x20, 0x1C]), ('w', [0x3C, 0x40, 0x30, 0x40, 0x3C]), ('x', [0x44, 0x28, 0x10, 0x28, 0x44]),
    ('y', [0x9C, 0xA0, 0xA0, 0xA0, 0x7C]), ('z', [0x44, 0x64, 0x54, 0x4C, 0x44]),
];

/// An RGB8 raster with a font scale `s`; drawing calls silently clip, so layouts never need
/// bounds checks.
struct Canvas {
    w: i64,
    h: i64,
    s: i64,
    buf: Vec<u8>,
}

impl Canvas {
    fn get(&self, x: i64, y: i64) -> Rgb {
        if !((0..self.w).contains(&x) && (0..self.h).contains(&y)) {
            return WHITE;
        }
        let i = 3 * (y * self.w + x) as usize;
        [self.buf[i], self.buf[i + 1], self.buf[i + 2]]
    }

    fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, c: Rgb) {
        for j in y.max(0)..(y + h).min(self.h) {
            for i in x.max(0)..(x + w).min(self.w) {
                let k = 3 * (j * self.w + i) as usize;
                self.buf[k..k + 3].copy_from_slice(&c);
            }
        }
    }

    fn outline(&mut self, x: i64, y: i64, w: i64, h: i64, c: Rgb) {
        self.rect(x, y, w, 1, c);
        self.rect(x, y + h - 1, w, 1, c);
        self.rect(x, y, 1, h, c);
        self.rect(x + w - 1, y, 1, h, c);
    }

    /// Bresenham with a 2×2 brush: a crisp 2-px line with no anti-aliasing.
    fn line(&mut self, (mut x, mut y): (i64, i64), (x1, y1): (i64, i64), c: Rgb) {
        let (dx, dy) = ((x1 - x).abs(), -(y1 - y).abs());
        let (sx, sy) = ((x1 - x).signum(), (y1 - y).signum());
        let mut err = dx + dy;
        loop {
            self.rect(x, y, 2, 2, c);
            if (x, y) == (x1, y1) {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Pixel width of `text` (6-px advance per glyph, no trailing gap).
    fn tw(&self, text: &str) -> i64 {
        (6 * text.chars().count() as i64 - 1).max(0) * self.s
    }

    /// Draws black `text` with (x, y) its top-left corner; `up` rotates it 90° anticlockwise
    /// (for the y label) with (x, y) its bottom-left. Chars missing from `FONT` render blank.
    fn text(&mut self, x: i64, y: i64, text: &str, up: bool) {
        let s = self.s;
        for (i, ch) in text.chars().enumerate() {
            let Some((_, glyph)) = FONT.iter().find(|(k, _)| *k == ch) else {
                continue;
            };
            for (gx, bits) in glyph.iter().enumerate() {
                for gy in (0..8).filter(|gy| bits >> gy & 1 == 1) {
                    let (u, v) = ((6 * i as i64 + gx as i64) * s, gy * s);
                    match up {
                        false => self.rect(x + u, y + v, s, s, BLACK),
                        true => self.rect(x + v, y - u - s, s, s, BLACK),
                    }
                }
            }
        }
    }
}

/// Writes row-major RGB8 pixels as a PNG.
fn write_png(path: &Path, width: u32, height: u32, rgb: &[u8]) -> io::Result<()> {
    let file = io::BufWriter::new(std::fs::File::create(path)?);
    let mut enc = png::Encoder::new(file, width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header()?;
    writer.write_image_data(rgb)?;
    Ok(writer.finish()?)
}

/// Image sets side by side, one titled column per set and one row per image, each pixel drawn
/// `zoom`× with a 4-px gutter: `columns` hold `(B, C, H, W)` values in [0, 1] for the `shape`
/// `(B, C, H, W)`, with 1 (grey) or 3 (RGB) channels.
pub fn save_image_grid(
    path: &Path,
    columns: &[(&str, Vec<f32>)],
    (b, c, h, w): (usize, usize, usize, usize),
    zoom: usize,
) -> io::Result<()> {
    let (cell_w, cell_h, gap, head) = ((w * zoom) as i64, (h * zoom) as i64, 4, 16);
    let title_w = columns
        .iter()
        .map(|(t, _)| 6 * t.len() as i64)
        .max()
        .unwrap_or(0);
    let col_w = cell_w.max(title_w) + gap;
    let (width, height) = (
        columns.len() as i64 * col_w + gap,
        head + b as i64 * (cell_h + gap),
    );
    let mut canvas = Canvas {
        w: width,
        h: height,
        s: 1,
        buf: vec![255; (width * height * 3) as usize],
    };
    for (j, (title, data)) in columns.iter().enumerate() {
        let x0 = gap + j as i64 * col_w;
        canvas.text(x0, 4, title, false);
        for i in 0..b {
            let y0 = head + i as i64 * (cell_h + gap);
            for (y, x) in (0..h).flat_map(|y| (0..w).map(move |x| (y, x))) {
                let at = |ch: usize| data[((i * c + ch.min(c - 1)) * h + y) * w + x];
                let rgb = [0, 1, 2].map(|ch| (at(ch).clamp(0.0, 1.0) * 255.0).round() as u8);
                let z = zoom as i64;
                canvas.rect(x0 + x as i64 * z, y0 + y as i64 * z, z, z, rgb);
            }
        }
    }
    write_png(path, width as u32, height as u32, &canvas.buf)
}

/// A range snapped outward to "nice" ticks (1/2/5×10^k steps, about five of them).
/// Log axes work in log10 space with whole-decade steps, so every label is a power of ten.
struct Axis {
    lo: f64,
    hi: f64,
    step: f64,
    ticks: Vec<f64>,
    log: bool,
}

impl Axis {
    fn new(vals: impl Iterator<Item = f64>, log: bool) -> Axis {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in vals {
            (lo, hi) = (lo.min(v), hi.max(v));
        }
        if lo > hi {
            (lo, hi) = (0.0, 1.0);
        }
        if lo == hi {
            // A constant series would give a zero-height range; pad it by 10% (or 1 around zero).
            let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
            (lo, hi) = (lo - pad, hi + pad);
        }
        let raw = (hi - lo) / 5.0;
        let mag = 10f64.powf(raw.log10().floor());
        let nice = [1.0, 2.0, 5.0]
            .into_iter()
            .find(|&m| raw / mag <= m)
            .unwrap_or(10.0);
        let step = (nice * mag).max(if log { 1.0 } else { 0.0 });
        let (a, b) = ((lo / step).floor() as i64, (hi / step).ceil() as i64);
        // `take` bounds the tick count even for subnormal or overflowing ranges.
        let ticks = (a..=b).take(50).map(|k| k as f64 * step).collect();
        let (lo, hi) = (a as f64 * step, b as f64 * step);
        Axis {
            lo,
            hi,
            step,
            ticks,
            log,
        }
    }

    fn frac(&self, v: f64) -> f64 {
        (v - self.lo) / (self.hi - self.lo)
    }

    /// Decimals follow the tick step so adjacent labels differ; huge or tiny axes switch to
    /// scientific notation to keep the margin narrow.
    fn label(&self, t: f64) -> String {
        // Decimal exponent, nudged so powers of ten computed in floating point land exactly.
        let exp = |v: f64| (v.abs().log10() + 1e-9).floor();
        let (v, step, big) = match self.log {
            true => (10f64.powf(t), 10f64.powf(t), 10f64.powf(t)),
            false => (t, self.step, self.lo.abs().max(self.hi.abs())),
        };
        if v.abs() < step * 1e-6 {
            return "0".into(); // avoids "-0.0" and float dust like 5.55e-17
        }
        if !(1e-3..1e5).contains(&big) {
            return format!("{v:.*e}", (exp(big) - exp(step)).max(0.0) as usize);
        }
        format!("{v:.*}", (-exp(step)).max(0.0) as usize)
    }
}

/// Pixel geometry shared by `render` and the tests: plot box (inclusive edges) and axes.
struct Layout {
    s: i64,
    x0: i64,
    y0: i64,
    x1: i64,
    y1: i64,
    xa: Axis,
    ya: Axis,
    /// Drawable points per series, already in axis space (log10 applied).
    pts: Vec<Vec<(f64, f64)>>,
}

impl Layout {
    fn px(&self, (x, y): (f64, f64)) -> (i64, i64) {
        let px = self.x0 as f64 + self.xa.frac(x) * (self.x1 - self.x0) as f64;
        let py = self.y1 as f64 - self.ya.frac(y) * (self.y1 - self.y0) as f64;
        // Clamped so ranges that collapse in floating point (e.g. subnormal spans) cannot
        // produce coordinates that overflow the integer drawing code.
        let snap = |v: f64| v.clamp(-1e6, 1e6).round() as i64;
        (snap(px), snap(py))
    }
}

impl Chart {
    /// Renders and writes an 8-bit RGB PNG.
    pub fn save_png(&self, path: &Path, width: u32, height: u32) -> io::Result<()> {
        write_png(path, width, height, &self.render(width, height))
    }

    /// Renders to row-major RGB8 (`width * height * 3` bytes).
    pub fn render(&self, width: u32, height: u32) -> Vec<u8> {
        let (w, h) = (i64::from(width), i64::from(height));
        let l = self.layout(w, h);
        let (s, (x0, y0, x1, y1)) = (l.s, (l.x0, l.y0, l.x1, l.y1));
        let mut c = Canvas {
            w,
            h,
            s,
            buf: vec![255; (w * h * 3) as usize],
        };
        for &t in &l.xa.ticks {
            let (x, lab) = (l.px((t, l.ya.lo)).0, l.xa.label(t));
            c.rect(x, y0, 1, y1 - y0, GRID);
            c.rect(x, y1, s, 3 * s, BLACK);
            c.text(x - c.tw(&lab) / 2, y1 + 5 * s, &lab, false);
        }
        for &t in &l.ya.ticks {
            let (y, lab) = (l.px((l.xa.lo, t)).1, l.ya.label(t));
            c.rect(x0, y, x1 - x0, 1, GRID);
            c.rect(x0 - 3 * s, y, 3 * s, s, BLACK);
            c.text(x0 - 5 * s - c.tw(&lab), y - 7 * s / 2, &lab, false);
        }
        let groups = l.pts.len().max(1) as f64;
        for (i, pts) in l.pts.iter().enumerate() {
            let col = PALETTE[i % PALETTE.len()];
            if self.kind == Kind::Bars {
                let width = 0.8 / groups;
                for &(x, y) in pts {
                    let left = x - 0.4 + i as f64 * width;
                    let (a, b) = (l.px((left, y)), l.px((left + width, 0.0)));
                    c.rect(
                        a.0,
                        a.1.min(b.1),
                        (b.0 - a.0).max(1),
                        (b.1 - a.1).abs().max(1),
                        col,
                    );
                }
                continue;
            }
            let px: Vec<(i64, i64)> = pts.iter().map(|&p| l.px(p)).collect();
            if self.kind == Kind::Scatter || px.len() == 1 {
                // A dot: a lone point would otherwise be a 2-px speck.
                for &(x, y) in &px {
                    c.rect(x - s, y - s, 2 * s + 1, 2 * s + 1, col);
                }
                continue;
            }
            for seg in px.windows(2) {
                c.line(seg[0], seg[1], col);
            }
        }
        c.outline(x0, y0, x1 - x0 + 1, y1 - y0 + 1, BLACK);
        c.text((w - c.tw(&self.title)) / 2, 6 * s, &self.title, false);
        let (xl, yl) = (&self.x_label, &self.y_label);
        c.text((x0 + x1 - c.tw(xl)) / 2, h - 13 * s, xl, false);
        c.text(6 * s, (y0 + y1 + c.tw(yl)) / 2, yl, true);
        self.legend(&mut c, &l);
        c.buf
    }

    /// Margins are sized from the actual tick labels so text never overlaps the plot box;
    /// the font is doubled on large canvases to stay legible.
    fn layout(&self, w: i64, h: i64) -> Layout {
        let s = if w >= 640 && h >= 400 { 2 } else { 1 };
        let y_of = |y: f64| if self.log_y { y.log10() } else { y };
        let finite = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite();
        let pts: Vec<Vec<(f64, f64)>> = (self.series.iter())
            .map(|se| {
                se.points
                    .iter()
                    .map(|&(x, y)| (x, y_of(y)))
                    .filter(finite)
                    .collect()
            })
            .collect();
        // Bars stand on 0 and are 1 wide around their x.
        let bars = self.kind == Kind::Bars;
        let xs = pts.iter().flatten().flat_map(|p| {
            let pad = if bars { 0.5 } else { 0.0 };
            [p.0 - pad, p.0 + pad]
        });
        let ys = pts.iter().flatten().map(|p| p.1).chain(bars.then_some(0.0));
        let xa = Axis::new(xs, false);
        let ya = Axis::new(ys, self.log_y);
        let widest = |a: &Axis| a.ticks.iter().map(|&t| a.label(t).len() as i64).max();
        let xlw = widest(&xa).unwrap_or(0) * 6 * s;
        let ylw = widest(&ya).unwrap_or(0) * 6 * s;
        // Left: margin, rotated y label, gap, tick labels, tick. Bottom: tick labels, x label.
        // Right: room for half of the last x tick label, which is centred on the plot edge.
        let (x0, y0) = (24 * s + ylw, 19 * s);
        let (x1, y1) = ((w - 6 * s - xlw / 2).max(x0 + 1), (h - 31 * s).max(y0 + 1));
        Layout {
            s,
            x0,
            y0,
            x1,
            y1,
            xa,
            ya,
            pts,
        }
    }

    /// Legend in whichever inner corner hides the fewest curve pixels (top-right on ties).
    fn legend(&self, c: &mut Canvas, l: &Layout) {
        let s = l.s;
        let (pad, swatch, row) = (4 * s, 18 * s, 11 * s);
        let Some(name_w) = self.series.iter().map(|se| c.tw(&se.name)).max() else {
            return;
        };
        let bw = 3 * pad + swatch + name_w;
        let bh = pad + row * self.series.len() as i64;
        let (xl, xr) = (l.x0 + 2 * pad, l.x1 - 2 * pad - bw);
        let (yt, yb) = (l.y0 + 2 * pad, l.y1 - 2 * pad - bh);
        let covered = |&(x, y): &(i64, i64)| {
            let cells = (x..x + bw).flat_map(|i| (y..y + bh).map(move |j| (i, j)));
            cells
                .filter(|&(i, j)| PALETTE.contains(&c.get(i, j)))
                .count()
        };
        let corners = [(xr, yt), (xl, yt), (xr, yb), (xl, yb)];
        let (x, y) = corners
            .into_iter()
            .min_by_key(covered)
            .unwrap_or(corners[0]);
        c.rect(x, y, bw, bh, WHITE);
        c.outline(x, y, bw, bh, BLACK);
        for (i, se) in self.series.iter().enumerate() {
            let ty = y + pad + i as i64 * row;
            let col = PALETTE[i % PALETTE.len()];
            c.rect(x + pad, ty + 7 * s / 2 - 1, swatch, 2, col);
            c.text(x + 2 * pad + swatch, ty, &se.name, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(points: Vec<(f64, f64)>, log_y: bool) -> Chart {
        let series = vec![Series {
            name: "loss".into(),
            points,
        }];
        let (title, x_label, y_label) = ("Test".into(), "step".into(), "value".into());
        Chart {
            title,
            x_label,
            y_label,
            series,
            log_y,
            kind: Kind::Line,
        }
    }

    fn pixel(buf: &[u8], w: u32, (x, y): (i64, i64)) -> Rgb {
        let i = 3 * (y as usize * w as usize + x as usize);
        [buf[i], buf[i + 1], buf[i + 2]]
    }

    #[test]
    fn render_size_background_and_curve() {
        let c = chart((0..20).map(|i| (i as f64, (i * i) as f64)).collect(), false);
        let (w, h) = (400, 300);
        let buf = c.render(w, h);
        assert_eq!(buf.len(), (w * h * 3) as usize);
        for corner in [(0, 0), (399, 0), (0, 299), (399, 299)] {
            assert_eq!(pixel(&buf, w, corner), WHITE);
        }
        assert!(buf.chunks(3).any(|p| p == PALETTE[0]));
        let l = c.layout(i64::from(w), i64::from(h));
        for pt in [(10.0, 100.0), (15.0, 225.0)] {
            let (px, py) = l.px(pt);
            let mut near = (-3..=3).flat_map(|dx| (-3..=3).map(move |dy| (px + dx, py + dy)));
            assert!(
                near.any(|q| pixel(&buf, w, q) == PALETTE[0]),
                "no curve near {pt:?}"
            );
        }
    }

    #[test]
    fn save_png_roundtrips() {
        let c = chart(
            vec![(0.0, 1.0), (1.0, 0.5), (2.0, f64::NAN), (3.0, 0.2)],
            false,
        );
        let path = std::env::temp_dir().join(format!("plot_test_{}.png", std::process::id()));
        c.save_png(&path, 320, 200).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(bytes[..8], [137, 80, 78, 71, 13, 10, 26, 10]);
        let mut reader = png::Decoder::new(io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut img = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut img).unwrap();
        assert_eq!((info.width, info.height), (320, 200));
        assert_eq!(img, c.render(320, 200));
    }

    #[test]
    fn degenerate_inputs_render() {
        let non_positive = vec![(0.0, 0.0), (1.0, -1.0), (2.0, 10.0), (3.0, f64::INFINITY)];
        let cases = [
            chart(non_positive, true),
            chart(vec![(0.0, -1.0), (1.0, 0.0)], true),
            chart(vec![], false),
            chart(vec![(3.0, 7.0)], false),
            chart(vec![(0.0, 2.5), (1.0, 2.5), (2.0, 2.5)], false),
            chart(vec![(-1e308, -5e-324), (1e308, 5e-324)], false),
            Chart {
                series: vec![],
                ..chart(vec![], false)
            },
        ];
        for c in &cases {
            for (w, h) in [(640, 480), (200, 100), (1, 1)] {
                assert_eq!(c.render(w, h).len(), (w * h * 3) as usize);
            }
        }
        let lone = chart(vec![(3.0, 7.0)], false).render(300, 200);
        assert!(lone.chunks(3).any(|p| p == PALETTE[0]));
        let decades = Axis::new([0.0, 2.0].into_iter(), true);
        let labels: Vec<String> = decades.ticks.iter().map(|&t| decades.label(t)).collect();
        assert_eq!(labels, ["1", "10", "100"]);
        let big = Axis::new([0.0, 2e5].into_iter(), false);
        let labels: Vec<String> = big.ticks.iter().map(|&t| big.label(t)).collect();
        assert_eq!(labels, ["0", "5.0e4", "1.0e5", "1.5e5", "2.0e5"]);
    }
}
