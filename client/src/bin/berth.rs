//! `berth`: the client command (get, put, shim, ls, tags, rm, search). All
//! the work is in the library's `cli` module.

mod common;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = berth::cli::Berth::parse();
    common::main("berth", berth::cli::run(cli.command))
}
