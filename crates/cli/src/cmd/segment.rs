//! `mooncake` subcommand (under construction).

/// Flags of this subcommand.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
