//! `registryput [-i] [-H 'Name: value']... REGISTRY PATH [FILE]`: the 2013
//! spec's command, the same code path as `berth put`.

mod common;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = berth::cli::RegistryPut::parse();
    common::main("registryput", berth::cli::put(cli.args))
}
