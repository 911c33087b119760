//! The `vigil` binary: parses the command line and hands over to [`vigil::cli`], which runs
//! the command on its own actix runtime.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    vigil::cli::run(vigil::cli::Cli::parse())
}
