//! `docker-berth`: the Docker CLI plugin behind `docker berth push|pull`.
//! All the work is in the library's `plugin` module.

mod common;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = berth::plugin::PluginCli::parse();
    common::main("docker berth", berth::plugin::run(cli))
}
