//! The cluster-credential flags every listener-starting or connecting
//! command shares (`--cluster-token`, `--insecure`), and how they reach the
//! transfer engine. One owner, flattened into each command's `Args`.
//!
//! Precedence (as [`mooncake_security::AuthMode::resolve`]): `--insecure`,
//! then `--cluster-token`, then `MC_CLUSTER_TOKEN` / `MOONCAKE_CLUSTER_TOKEN_FILE`.
//!
//! The environment is how the credential reaches the libraries a command
//! runs (transfer engine, HTTP metadata client, store client, and child
//! processes): [`AuthArgs::install`] exports `--cluster-token` into it, and
//! `--insecure` clears it, before anything starts.

use mooncake_security::credential::{ADMIN_TOKEN_ENV, TOKEN_ENV, TOKEN_FILE_ENV};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use mooncake_security::{AuthMode, Credential};

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
    /// Resolve the command's credential and export it to this process's
    /// environment (see the module docs). Call first in `run`, before any
    /// engine, client or child process starts. With no flag and nothing in
    /// the environment the command runs without authentication and says so
    /// in a warning (`mooncake up` generates a credential instead).
    pub fn install(&self) -> anyhow::Result<AuthMode> {
        let mode = if self.insecure || self.cluster_token.is_some() {
            AuthMode::resolve(self.insecure, self.cluster_token.as_deref())?
        } else {
            match Credential::from_env()? {
                Some(c) => AuthMode::Required(c),
                None => {
                    tracing::warn!(
                        "no cluster credential ({TOKEN_ENV}, {TOKEN_FILE_ENV} or --cluster-token): \
                         running WITHOUT authentication; pass --insecure to silence this"
                    );
                    return Ok(AuthMode::Insecure);
                }
            }
        };
        // Single place that writes the environment; done before this command
        // starts any thread that reads it.
        match &mode {
            AuthMode::Insecure => {
                for k in [TOKEN_ENV, ADMIN_TOKEN_ENV, TOKEN_FILE_ENV] {
                    std::env::remove_var(k);
                }
            }
            AuthMode::Required(c) => {
                if self.cluster_token.is_some() {
                    std::env::set_var(TOKEN_ENV, c.expose_token());
                }
            }
        }
        Ok(mode)
    }

    /// [`Self::install`], except that with no flag and nothing in the
    /// environment a fresh credential (cluster and admin token) is generated
    /// and exported instead of running insecure: for commands that start the
    /// whole cluster themselves (`mooncake up`, `mooncake bench transfer`).
    /// Returns the mode and whether it was generated.
    pub fn install_or_generate(&self) -> anyhow::Result<(AuthMode, bool)> {
        if self.insecure || self.cluster_token.is_some() || Credential::from_env()?.is_some() {
            return Ok((self.install()?, false));
        }
        let cred = Credential::generate();
        std::env::set_var(TOKEN_ENV, cred.expose_token());
        if let Some(a) = cred.expose_admin_token() {
            std::env::set_var(ADMIN_TOKEN_ENV, a);
        }
        Ok((AuthMode::Required(cred), true))
    }

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

/// The credential file `mooncake up` writes for its clients: mode 0600,
/// by default in a fresh 0700 directory (created exclusively, so nothing
/// another user prepared is followed) under `$XDG_RUNTIME_DIR` or the
/// temporary directory, removed again when dropped. Exported to this
/// process's environment as `MOONCAKE_CLUSTER_TOKEN_FILE`, so the cluster's
/// own components and children use it.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    /// The directory created for it (removed with it); `None` for a path
    /// the user chose, which is left in place.
    own_dir: Option<PathBuf>,
}

impl TokenFile {
    /// Write `cred` to `at`, or to a fresh private directory.
    pub fn create(cred: &Credential, at: Option<&Path>) -> anyhow::Result<Self> {
        let (path, own_dir) = match at {
            Some(p) => (p.to_path_buf(), None),
            None => {
                let base = std::env::var_os("XDG_RUNTIME_DIR")
                    .map(PathBuf::from)
                    .filter(|p| p.is_dir())
                    .unwrap_or_else(std::env::temp_dir);
                let dir = base.join(format!(
                    "mooncake-{}-{:08x}",
                    std::process::id(),
                    rand::random::<u32>()
                ));
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                (dir.join("cluster-token"), Some(dir))
            }
        };
        cred.write_file(&path)?;
        std::env::set_var(TOKEN_FILE_ENV, &path);
        Ok(Self { path, own_dir })
    }

    /// Where the credential is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        if let Some(dir) = &self.own_dir {
            let _ = std::fs::remove_file(&self.path);
            let _ = std::fs::remove_dir(dir);
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
    fn token_file_is_private_and_removed() {
        use std::os::unix::fs::PermissionsExt;
        let cred = Credential::generate();
        let f = TokenFile::create(&cred, None).unwrap();
        let mode = std::fs::metadata(f.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(f.path().parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        assert_eq!(Credential::load_file(f.path()).unwrap(), cred);
        let p = f.path().to_path_buf();
        drop(f);
        assert!(!p.exists());
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
