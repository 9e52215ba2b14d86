//! The `branchguard` binary: everything lives in the library; this only reports errors.
#![forbid(unsafe_code)]

/// jemalloc, not glibc's malloc: freed memory goes back to the system (its
/// settings in .cargo/config.toml) rather than staying with the thread that
/// last used it (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    branchguard::cli::main()
}
