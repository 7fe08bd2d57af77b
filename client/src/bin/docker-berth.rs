//! `docker-berth`: the Docker CLI plugin behind `docker berth push|pull`.
//! Its command line is the library's `cli::PluginCli`; the work is in `plugin`.

mod common;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = berth::cli::PluginCli::parse();
    common::main("docker berth", berth::plugin::run(cli))
}
