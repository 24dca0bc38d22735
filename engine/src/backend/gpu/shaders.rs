//! WGSL sources from `shaders/`, one file per kernel family, compiled into the binary.
//!
//! A family file holds shared helpers followed by `//!kernel NAME [ALIAS…]` sections; the module
//! for one kernel is `common.wgsl` + the helpers + that section, so each kernel gets its own
//! bindings. A kernel that reads or writes f16 storage names its element types as aliases after
//! its name, one per leading storage binding in order (binding 1 is the first): each variant of
//! the kernel is compiled with every alias set to f32 or f16 from the buffers it is given, so
//! the f32 and f16 paths are one source. Every module also gets the parameter structs of
//! `params.rs` and the op constants the `switch`es of element-wise and reduction kernels name
//! (`UNARY_EXP`), both generated from the Rust definitions; a kernel whose parameters are
//! `Strided` also gets `strided.wgsl`; and every module gets one section of `lanes.wgsl`, the one
//! for 8 lanes (subgroup broadcasts) or for 1, so that a kernel that shares loads across a
//! subgroup's lanes has one source for adapters with and without subgroups.

const COMMON: &str = include_str!("../../../../shaders/common.wgsl");
const STRIDED: &str = include_str!("../../../../shaders/strided.wgsl");
const LANES: &str = include_str!("../../../../shaders/lanes.wgsl");
pub const ELEMENTWISE: &str = include_str!("../../../../shaders/elementwise.wgsl");
pub const COPY: &str = include_str!("../../../../shaders/copy.wgsl");
pub const REDUCE: &str = include_str!("../../../../shaders/reduce.wgsl");
pub const MATMUL: &str = include_str!("../../../../shaders/matmul.wgsl");
pub const MATMUL_BLOCKS: &str = include_str!("../../../../shaders/matmul_blocks.wgsl");
pub const SOFTMAX: &str = include_str!("../../../../shaders/softmax.wgsl");
pub const LAYERNORM: &str = include_str!("../../../../shaders/layernorm.wgsl");
pub const BATCHNORM: &str = include_str!("../../../../shaders/batchnorm.wgsl");
pub const ATTENTION: &str = include_str!("../../../../shaders/attention.wgsl");
pub const ATTENTION_DELTA: &str = include_str!("../../../../shaders/attention_delta.wgsl");
pub const OPTIM: &str = include_str!("../../../../shaders/optim.wgsl");

/// The helpers and the section of kernel `name` in `family`.
fn section<'a>(family: &'a str, name: &str) -> (&'a str, &'a str) {
    let mut sections = family.split("//!kernel ");
    let helpers = sections.next().unwrap_or_default();
    let body = sections
        .find(|s| s.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("internal: no WGSL kernel named {name}"));
    (helpers, body)
}

/// What a kernel's WGSL declares: how many element-type aliases after its name (see the module
/// docs), its parameter struct (`var<uniform> P: NAME;`, in its section or in its family's
/// helpers), and whether it shares loads across lanes (names `LANES`, see `lanes.wgsl`).
#[derive(Clone, Copy)]
pub struct Declared<'a> {
    pub aliases: usize,
    pub params: &'a str,
    pub shares: bool,
}

pub fn declared<'a>(family: &'a str, name: &str) -> Declared<'a> {
    let (helpers, body) = section(family, name);
    Declared {
        aliases: header_aliases(body).len(),
        params: section_params(helpers, body),
        shares: helpers.contains("LANES") || body.contains("LANES"),
    }
}

/// The parameter struct declared in a kernel's family helpers or its section.
fn section_params<'a>(helpers: &'a str, body: &'a str) -> &'a str {
    let find = |src: &'a str| {
        let decl = "var<uniform> P: ";
        let at = src.find(decl)? + decl.len();
        src[at..].split(';').next()
    };
    let name = body.split_whitespace().next().unwrap_or_default();
    find(helpers)
        .or_else(|| find(body))
        .unwrap_or_else(|| panic!("internal: WGSL kernel {name} declares no parameters"))
}

/// The aliases on the header line of a kernel's section.
fn header_aliases(body: &str) -> Vec<&str> {
    let header = body.lines().next().unwrap_or_default();
    header.split_whitespace().skip(1).collect()
}

/// Which source of a kernel to compile: alias `i` is f16 where bit `i` of `f16_mask` is set (the
/// caller has checked that the mask names no binding past the aliases), f32 elsewhere; `lanes`
/// is 8 where loads are shared across subgroups of 8 lanes, else 1 (see `lanes.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Variant {
    pub f16_mask: u32,
    pub lanes: u32,
}

/// The full WGSL module for kernel `name` of `family` in variant `v`.
pub fn module(family: &str, name: &str, v: Variant) -> String {
    let (helpers, body) = section(family, name);
    let mut prelude = String::new();
    if v.f16_mask != 0 {
        prelude.push_str("enable f16;\n");
    }
    for (i, alias) in header_aliases(body).iter().enumerate() {
        let ty = if v.f16_mask >> i & 1 == 1 {
            "f16"
        } else {
            "f32"
        };
        prelude.push_str(&format!("alias {alias} = {ty};\n"));
    }
    prelude.push_str(&crate::backend::wgsl_op_constants());
    prelude.push_str(&super::params::declarations());
    let strided = if section_params(helpers, body) == "Strided" {
        STRIDED
    } else {
        ""
    };
    format!(
        "{prelude}{COMMON}\n{}\n{strided}\n{helpers}\n// kernel {body}",
        lanes(v.lanes)
    )
}

/// `lanes.wgsl`'s shared part and its section for `n` lanes.
fn lanes(n: u32) -> String {
    let mut parts = LANES.split("//!lanes ");
    let shared = parts.next().unwrap_or_default();
    let section = parts
        .find(|s| s.split_whitespace().next() == Some(&n.to_string()))
        .unwrap_or_else(|| panic!("internal: no lanes.wgsl section for {n} lanes"));
    format!("{shared}// lanes {section}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel section parses and validates as WGSL (no adapter needed), with and without
    /// subgroup lanes, and so does every kernel with element-type aliases in its all-f16 variant.
    #[test]
    fn every_kernel_validates() {
        let families = [
            ELEMENTWISE,
            COPY,
            REDUCE,
            MATMUL,
            MATMUL_BLOCKS,
            SOFTMAX,
            LAYERNORM,
            BATCHNORM,
            ATTENTION,
            ATTENTION_DELTA,
            OPTIM,
        ];
        let (mut count, mut typed) = (0, 0);
        for family in families {
            for section in family.split("//!kernel ").skip(1) {
                let name = section.split_whitespace().next().unwrap();
                let n = declared(family, name).aliases;
                let masks = if n == 0 {
                    vec![0]
                } else {
                    vec![0, (1 << n) - 1]
                };
                typed += (n > 0) as usize;
                for (f16_mask, lanes) in masks.into_iter().flat_map(|m| [(m, 1), (m, 8)]) {
                    let src = module(family, name, Variant { f16_mask, lanes });
                    let m = naga::front::wgsl::parse_str(&src)
                        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&src)));
                    naga::valid::Validator::new(
                        naga::valid::ValidationFlags::all(),
                        naga::valid::Capabilities::all(),
                    )
                    .validate(&m)
                    .unwrap_or_else(|e| {
                        panic!("{name} (f16 mask {f16_mask}, lanes {lanes}): {e:?}")
                    });
                }
                count += 1;
            }
        }
        assert_eq!((count, typed), (32, 9));
    }
}
