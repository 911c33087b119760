//! The `vigil` binary: parses the command line and hands over to [`vigil::cli`].

use clap::Parser;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    vigil::cli::run(vigil::cli::Cli::parse()).await
}
