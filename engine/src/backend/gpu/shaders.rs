//! WGSL sources from `shaders/`, one file per kernel family, compiled into the binary.
//!
//! A family file holds shared helpers followed by `//!kernel NAME` sections; the module for one
//! kernel is `common.wgsl` + the helpers + that section, so each kernel gets its own bindings.

const COMMON: &str = include_str!("../../../../shaders/common.wgsl");
pub const ELEMENTWISE: &str = include_str!("../../../../shaders/elementwise.wgsl");
pub const COPY: &str = include_str!("../../../../shaders/copy.wgsl");
pub const REDUCE: &str = include_str!("../../../../shaders/reduce.wgsl");
pub const MATMUL: &str = include_str!("../../../../shaders/matmul.wgsl");
pub const SOFTMAX: &str = include_str!("../../../../shaders/softmax.wgsl");
pub const LAYERNORM: &str = include_str!("../../../../shaders/layernorm.wgsl");
pub const BATCHNORM: &str = include_str!("../../../../shaders/batchnorm.wgsl");
pub const ATTENTION: &str = include_str!("../../../../shaders/attention.wgsl");
pub const OPTIM: &str = include_str!("../../../../shaders/optim.wgsl");

/// The full WGSL module for kernel `name` of `family`.
pub fn module(family: &str, name: &str) -> String {
    let mut sections = family.split("//!kernel ");
    let helpers = sections.next().unwrap_or_default();
    let body = sections
        .find(|s| s.lines().next().map(str::trim) == Some(name))
        .unwrap_or_else(|| panic!("internal: no WGSL kernel named {name}"));
    format!("{COMMON}\n{helpers}\n// kernel {body}")
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
            BATCHNORM,
            ATTENTION,
            OPTIM,
        ];
        let mut count = 0;
        for family in families {
            for section in family.split("//!kernel ").skip(1) {
                let name = section.lines().next().unwrap().trim();
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
        assert_eq!(count, 30);
    }
}
