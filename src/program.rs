//! How every program ends: its error as one line, and a GPU failure as one line too.

use selfsup_engine::Device;

/// Runs a program's `main`: an `Err` is printed as `error: …` and exits with status 1. A panic
/// that follows a GPU failure (a read-back outside the training step, after the device ran out
/// of memory or was lost) prints the failure, naming the op, instead of a panic message; any
/// other panic is reported as usual.
pub fn run_main<T>(main: impl FnOnce() -> Result<T, String>) {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| match Device::shared_gpu_failure() {
        Some(e) => eprintln!("error: {e}"),
        None => default_hook(info),
    }));
    if let Err(e) = main() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
