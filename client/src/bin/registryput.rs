//! `registryput [-i] [-H 'Name: value']... REGISTRY PATH [FILE]`: the 2013
//! spec's command, the same code path as `berth put`.

mod common;

use std::process::ExitCode;

use clap::Parser;

/// PUT a registry path over any remote, with FILE or stdin as the body.
#[derive(Parser, Debug)]
#[command(name = "registryput", version = berth::VERSION)]
struct Cli {
    #[command(flatten)]
    args: berth::cli::PutArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    common::main("registryput", berth::cli::put(cli.args))
}
