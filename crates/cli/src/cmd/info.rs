//! `mooncake info`: what this build and machine offer — version, and whether
//! the CUDA driver was found (GPU memory on the data path) with its devices.

/// Flags of `mooncake info`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (cuda, detail) = mooncake_transfer::cuda::status();
    let devices = mooncake_transfer::cuda::engine()
        .map(|e| e.device_count())
        .unwrap_or(0);
    if args.json {
        let v = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "cuda": cuda,
            "cuda_devices": devices,
            "cuda_detail": detail,
        });
        println!("{v}");
    } else {
        println!("mooncake {}", env!("CARGO_PKG_VERSION"));
        println!("cuda: {} ({detail})", if cuda { "yes" } else { "no" });
    }
    Ok(())
}
