//! The `branchguard` binary: everything lives in the library; this only reports errors.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    branchguard::cli::main()
}
