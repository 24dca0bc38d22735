//! WGSL sources from `shaders/`, one file per kernel family, compiled into the binary.
//!
//! A family file holds shared helpers followed by `//!kernel NAME` sections; the module for one
//! kernel is `common.wgsl` + the helpers + that section, so each kernel gets its own bindings.
//! A section headed `//!kernel NAME0 NAME1 …` is one source specialised several ways: kernel
//! NAMEi gets `const VARIANT: u32 = i;`, and the compiler drops the branches it rules out.

const COMMON: &str = include_str!("../../../../shaders/common.wgsl");
pub const ELEMENTWISE: &str = include_str!("../../../../shaders/elementwise.wgsl");
pub const COPY: &str = include_str!("../../../../shaders/copy.wgsl");
pub const REDUCE: &str = include_str!("../../../../shaders/reduce.wgsl");
pub const MATMUL: &str = include_str!("../../../../shaders/matmul.wgsl");
pub const SOFTMAX: &str = include_str!("../../../../shaders/softmax.wgsl");
pub const LAYERNORM: &str = include_str!("../../../../shaders/layernorm.wgsl");
pub const ATTENTION: &str = include_str!("../../../../shaders/attention.wgsl");
pub const OPTIM: &str = include_str!("../../../../shaders/optim.wgsl");

/// The full WGSL module for kernel `name` of `family`.
pub fn module(family: &str, name: &str) -> String {
    let mut sections = family.split("//!kernel ");
    let helpers = sections.next().unwrap_or_default();
    for body in sections {
        let names = body.lines().next().unwrap_or_default().split_whitespace();
        if let Some(variant) = names.clone().position(|n| n == name) {
            let constant = if names.count() > 1 {
                format!("const VARIANT: u32 = {variant}u;\n")
            } else {
                String::new()
            };
            return format!("{COMMON}\n{constant}{helpers}\n// kernel {body}");
        }
    }
    panic!("internal: no WGSL kernel named {name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel section parses and validates as WGSL (no adapter needed).
    #[test]
    fn every_kernel_validates() {
        let families = [
            ELEMENTWISE,
            COPY,
            REDUCE,
            MATMUL,
            SOFTMAX,
            LAYERNORM,
            ATTENTION,
            OPTIM,
        ];
        let mut count = 0;
        for family in families {
            let names = family
                .split("//!kernel ")
                .skip(1)
                .flat_map(|s| s.lines().next().unwrap().split_whitespace());
            for name in names {
                let src = module(family, name);
                let m = naga::front::wgsl::parse_str(&src)
                    .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&src)));
                naga::valid::Validator::new(
                    naga::valid::ValidationFlags::all(),
                    naga::valid::Capabilities::all(),
                )
                .validate(&m)
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
                count += 1;
            }
        }
        assert_eq!(count, 28);
    }
}
