//! `registryget [-i] [-H 'Name: value']... REGISTRY PATH`: the 2013 spec's
//! command, the same code path as `berth get`.

mod common;

use std::process::ExitCode;

use clap::Parser;

/// GET a registry path over any remote; the body goes to stdout.
#[derive(Parser, Debug)]
#[command(name = "registryget", version = berth::VERSION)]
struct Cli {
    #[command(flatten)]
    args: berth::cli::GetArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    common::main("registryget", berth::cli::get(cli.args))
}
