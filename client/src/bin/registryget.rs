//! `registryget [-i] [-H 'Name: value']... REGISTRY PATH`: the 2013 spec's
//! command, the same code path as `berth get`.

mod common;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = berth::cli::RegistryGet::parse();
    common::main("registryget", berth::cli::get(cli.args))
}
