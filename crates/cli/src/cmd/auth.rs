//! The cluster-credential flags every listener-starting or connecting
//! command shares (`--cluster-token`, `--insecure`), and how they reach the
//! transfer engine. One owner, flattened into each command's `Args`.
//!
//! Precedence (as [`mooncake_security::AuthMode::resolve`]): `--insecure`,
//! then `--cluster-token`, then `MC_CLUSTER_TOKEN` / `MOONCAKE_CLUSTER_TOKEN_FILE`.

use mooncake_transfer::TransferEngineConfig;

/// `--cluster-token` / `--insecure`.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthArgs {
    /// Cluster token peers prove (HMAC handshake; never sent on the wire).
    /// Default: MC_CLUSTER_TOKEN, else the file named by MOONCAKE_CLUSTER_TOKEN_FILE.
    #[arg(long = "cluster-token", alias = "token", value_name = "TOKEN")]
    pub cluster_token: Option<String>,
    /// Run without authentication (anyone who reaches a port may read and
    /// write); logged as a warning.
    #[arg(long)]
    pub insecure: bool,
}

impl AuthArgs {
    /// Put the flags into a transfer engine config (flags win over the
    /// file and the environment already applied to it).
    pub fn apply_to_engine(&self, config: &mut TransferEngineConfig) {
        if self.insecure {
            config.insecure = true;
        }
        if let Some(t) = &self.cluster_token {
            config.cluster_token = Some(t.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        auth: AuthArgs,
    }

    #[test]
    fn flags_parse_and_reach_the_engine_config() {
        let c = Cli::parse_from(["x", "--cluster-token", "0123456789abcdef0123"]);
        let mut cfg = TransferEngineConfig::default();
        c.auth.apply_to_engine(&mut cfg);
        assert_eq!(cfg.cluster_token.as_deref(), Some("0123456789abcdef0123"));
        assert!(!cfg.insecure);
        // The old spelling of `mooncake segment` still works.
        let c = Cli::parse_from(["x", "--token", "0123456789abcdef0123", "--insecure"]);
        let mut cfg = TransferEngineConfig::default();
        c.auth.apply_to_engine(&mut cfg);
        assert!(cfg.insecure);
        assert!(matches!(
            cfg.auth_mode().unwrap(),
            mooncake_security::AuthMode::Insecure
        ));
    }
}
