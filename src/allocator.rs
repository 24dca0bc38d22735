//! The allocator of the example programs and benchmarks: mimalloc, told to keep freed pages.
//!
//! A training step frees and re-allocates the same large activation buffers (tens of MB) every
//! step. By default mimalloc hands freed pages back to the OS after 10 ms, and touching them again
//! costs a page fault and a page of zeroing per 4 KiB: about 15 % of a SimCLR step on the CPU
//! backend. Keeping them for a second removes most of that cost and still returns memory when
//! idle. Large blocks live in mimalloc's arenas, which purge on their own clock (`purge_delay` ×
//! `arena_purge_mult`); at the default multiplier a GPT step still took ~7 page faults per ms
//! (`perf stat`), and a multiplier of 1000 cut them sevenfold and the step by 7–13 % (the `gpt`
//! example, 150 steps, alternated). Arena memory then returns to the OS after ~17 idle minutes.

pub use mimalloc::MiMalloc as Allocator;

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_t` of mimalloc.h, v3), which
/// the Rust bindings do not name.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// `mi_option_arena_purge_mult`, likewise.
const ARENA_PURGE_MULT: libmimalloc_sys::mi_option_t = 24;

/// Delays returning freed pages to the OS (a second for small pages, ~17 minutes for arena
/// blocks); call once at start-up.
pub fn keep_freed_pages() {
    // SAFETY: setting an option is a plain store; called before other threads allocate.
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 1000);
        libmimalloc_sys::mi_option_set(ARENA_PURGE_MULT, 1000);
    }
}
