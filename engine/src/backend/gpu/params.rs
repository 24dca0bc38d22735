//! Kernel parameters: one `#[repr(C)]` struct per layout, defined once here. Each launch writes
//! its struct's bytes to binding 0 (a uniform buffer), and every WGSL module is given the same
//! structs as WGSL declarations (`struct Product { m: u32, … }`); a kernel names its own with
//! `var<uniform> P: Product;` and reads fields by name, and the launch checks that the host
//! passed that struct.
//!
//! The two layouts agree because every field has the alignment a uniform buffer wants (4 for
//! scalars, 16 for vec4s and nested structs), written out as `@align(16)` in the WGSL, while
//! `Pod` refuses implicit padding on the Rust side: the gaps before 16-byte members are explicit
//! `_pad` fields, which the WGSL declaration leaves out. A test compares naga's offsets with Rust's.

use bytemuck::{Pod, Zeroable};

/// A kernel's parameter struct.
pub trait Params: Pod {
    /// Its WGSL name, which the kernel's `var<uniform> P: NAME;` gives.
    const NAME: &'static str;
}

/// A field type and its WGSL spelling.
pub trait Wgsl {
    fn wgsl() -> String;
}

/// Field types spelled as one WGSL type each.
macro_rules! wgsl_types {
    ($($ty:ty => $wgsl:literal),*) => {
        $(impl Wgsl for $ty {
            fn wgsl() -> String {
                $wgsl.into()
            }
        })*
    };
}

wgsl_types!(u32 => "u32", f32 => "f32", U32x4 => "vec4<u32>", F32x4 => "vec4<f32>");

impl<T: Wgsl, const N: usize> Wgsl for [T; N] {
    fn wgsl() -> String {
        format!("array<{}, {N}>", T::wgsl())
    }
}

/// WGSL's `vec4<u32>`: 16-byte aligned, as arrays in a uniform buffer must be strided.
#[repr(C, align(16))]
#[derive(Clone, Copy, Default, Debug, Pod, Zeroable)]
pub struct U32x4(pub [u32; 4]);

/// WGSL's `vec4<f32>`.
#[repr(C, align(16))]
#[derive(Clone, Copy, Default, Debug, Pod, Zeroable)]
pub struct F32x4(pub [f32; 4]);

/// Up to eight words as WGSL's `array<vec4<u32>, 2>` (indexed `[d / 4u][d % 4u]`), the rest zero.
pub fn words8(v: impl IntoIterator<Item = usize>) -> [U32x4; 2] {
    let mut w = [U32x4::default(); 2];
    for (d, x) in v.into_iter().enumerate() {
        w[d / 4].0[d % 4] = x as u32;
    }
    w
}

/// Defines each struct, its [`Params`] and [`Wgsl`] impls, and [`declarations`].
macro_rules! params {
    ($($(#[$meta:meta])* $name:ident { $($field:ident: $ty:ty),* $(,)? })*) => {
        $(
            $(#[$meta])*
            #[repr(C)]
            #[derive(Clone, Copy, Default, Debug, Pod, Zeroable)]
            pub struct $name {
                $(pub $field: $ty),*
            }

            impl Params for $name {
                const NAME: &'static str = stringify!($name);
            }

            impl Wgsl for $name {
                fn wgsl() -> String {
                    stringify!($name).into()
                }
            }
        )*

        /// Every parameter struct as WGSL, prepended to every kernel's module.
        pub fn declarations() -> String {
            let mut out = String::new();
            $(
                let fields: Vec<String> = [$((
                    stringify!($field),
                    <$ty as Wgsl>::wgsl(),
                    std::mem::align_of::<$ty>(),
                )),*]
                    .into_iter()
                    .filter(|(f, ..)| !f.starts_with('_'))
                    .map(|(f, t, a)| match a {
                        4 => format!("{f}: {t}"),
                        _ => format!("@align({a}) {f}: {t}"),
                    })
                    .collect();
                out += &format!("struct {} {{ {} }}\n", stringify!($name), fields.join(", "));
            )*
            out
        }

        /// Each struct's name, size and the offsets of its WGSL fields, for the layout test.
        #[cfg(test)]
        fn layouts() -> Vec<(&'static str, usize, Vec<(&'static str, usize)>)> {
            vec![$((
                stringify!($name),
                std::mem::size_of::<$name>(),
                [$((stringify!($field), std::mem::offset_of!($name, $field))),*]
                    .into_iter()
                    .filter(|(f, _)| !f.starts_with('_'))
                    .collect(),
            )),*]
        }
    };
}

params! {
    /// `unary`, `unary_backward`: quads of four elements, and the op's scalars.
    Quads { quads: u32, a: f32, b: f32 }

    /// Strided element-wise launches (`binary`, `select`, `gather`; helpers in strided.wgsl):
    /// quads of the output, a source offset (gather), the merged shape and each operand's
    /// strides, absent operands' zero.
    Strided {
        quads: u32,
        base: u32,
        _pad: [u32; 2],
        shape: [U32x4; 2],
        s0: [U32x4; 2],
        s1: [U32x4; 2],
        s2: [U32x4; 2],
    }

    /// `copy_rows`: element r of source row o goes to `Y[o * dst_row + dst_off + r]`.
    CopyRows { n: u32, row: u32, dst_row: u32, dst_off: u32 }

    /// Row gathers and scatters over an (outer, n, inner) layout with `nidx` indices; `index_add`
    /// sums occurrences `q_start..q_start + q_len` and adds to Y when `accumulate`.
    Indexed { total: u32, n: u32, inner: u32, nidx: u32, q_start: u32, q_len: u32, accumulate: u32 }

    /// `fill` (every element `value`) and `cast` (value unread).
    Fill { n: u32, value: f32 }

    /// `reduce_chunks`: the middle extent of (outer, n, inner) in `blocks` blocks of `chunk`.
    Chunks { outer: u32, n: u32, inner: u32, chunk: u32, blocks: u32 }

    /// `sum_squares`: `count` tensors of `len[k]` values, written to `OUT[first + k]`.
    SumSquares { count: u32, first: u32, _pad: [u32; 2], len: [U32x4; 2] }

    /// The matrix products: C = op(A) · op(B), M×K · K×N, over batches from `batch_base`, A and B
    /// read through row, column and batch strides; K from `k_start` to `k_end`. `matmul` and
    /// `matmul_vec4` add into C when `accumulate`; `matmul_tiled` splits K into `splits` slices
    /// of `split_len`, each writing its own slab of `slab` values.
    Product {
        m: u32,
        n: u32,
        k: u32,
        a_rs: u32,
        a_cs: u32,
        b_rs: u32,
        b_cs: u32,
        a_bs: u32,
        b_bs: u32,
        batch_base: u32,
        k_start: u32,
        k_end: u32,
        accumulate: u32,
        splits: u32,
        split_len: u32,
        slab: u32,
    }

    /// Softmax over rows of `cols`; log-softmax when `log`.
    Softmax { rows: u32, cols: u32, log: u32 }

    /// Layer norm over rows of `cols`.
    LayerNorm { rows: u32, cols: u32, eps: f32 }

    /// Batch norm over (outer, channels, inner), `count` = outer · inner values per channel.
    BatchNorm { count: u32, channels: u32, inner: u32, eps: f32, momentum: f32 }

    /// Where row i of problem b of an attention tensor starts:
    /// `offset + (b / heads)·n_stride + (b % heads)·h_stride + i·row_stride`.
    #[repr(align(16))]
    RowLayout { n_stride: u32, h_stride: u32, row_stride: u32, offset: u32 }

    /// The attention kernels: `bh` problems of `heads` heads, `tq` queries, `tk` keys, the
    /// score scale, +∞ (WGSL has no literal for it), and the layouts of q, k, v and the output
    /// (whose gradient shares it).
    Attention {
        bh: u32,
        heads: u32,
        tq: u32,
        tk: u32,
        scale: f32,
        inf: f32,
        _pad: [u32; 2],
        q: RowLayout,
        k: RowLayout,
        v: RowLayout,
        o: RowLayout,
    }

    /// `adamw`: `count` parameters, parameter k from workgroup `start[k]` with `n[k]` values,
    /// its decay and step; β1, β2, 1 − β1, 1 − β2, 1/√(1 − β2ᵗ) and ε shared.
    AdamW {
        start: U32x4,
        n: U32x4,
        decay: F32x4,
        step: F32x4,
        count: u32,
        beta1: f32,
        beta2: f32,
        c1: f32,
        c2: f32,
        inv_bias2: f32,
        eps: f32,
        _pad: u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// naga lays out every WGSL struct as Rust does: same field offsets, same size.
    #[test]
    fn wgsl_and_rust_layouts_agree() {
        let src = format!(
            "{}\n@group(0) @binding(0) var<uniform> P: Strided;\n@compute @workgroup_size(1) fn main() {{}}",
            declarations()
        );
        let module = naga::front::wgsl::parse_str(&src).expect("parameter structs parse");
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(module.to_ctx()).unwrap();
        for (name, size, offsets) in layouts() {
            let (handle, ty) = module
                .types
                .iter()
                .find(|(_, t)| t.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("{name} not declared"));
            let naga::TypeInner::Struct { members, span } = &ty.inner else {
                panic!("{name} is not a struct");
            };
            let wgsl: Vec<(&str, usize)> = members
                .iter()
                .map(|m| (m.name.as_deref().unwrap(), m.offset as usize))
                .collect();
            assert_eq!(wgsl, offsets, "{name}: field offsets");
            // A uniform struct's size is rounded up to its alignment, as Rust's is.
            let align = layouter[handle].alignment.round_up(*span) as usize;
            assert_eq!(align, size, "{name}: size");
        }
    }
}
