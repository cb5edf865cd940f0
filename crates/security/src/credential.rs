//! The cluster credential: one shared secret every member of a cluster holds
//! (and an optional admin secret for cluster-wide operations), where it
//! comes from, and the explicit insecure mode.
//!
//! Sources, first match wins ([`AuthMode::resolve`]): an explicit `--insecure`
//! flag; a token given on the command line or in `setup`; `MC_CLUSTER_TOKEN`
//! (and `MC_ADMIN_TOKEN`); the file named by `MOONCAKE_CLUSTER_TOKEN_FILE`.
//! The file holds `cluster=<token>` and optionally `admin=<token>` lines (a
//! single bare line is the cluster token) and must have mode 0600.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::mac;
use crate::SecurityError;

/// Environment variable holding the cluster token.
pub const TOKEN_ENV: &str = "MC_CLUSTER_TOKEN";
/// Environment variable holding the admin token.
pub const ADMIN_TOKEN_ENV: &str = "MC_ADMIN_TOKEN";
/// Environment variable naming a credential file.
pub const TOKEN_FILE_ENV: &str = "MOONCAKE_CLUSTER_TOKEN_FILE";
/// Shortest token accepted: a guessable token is no credential.
pub const MIN_TOKEN_LEN: usize = 16;

/// What a peer proved it may do. Ordered: `Admin` may do all `Cluster` may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Proved nothing (only an insecure server serves it).
    Anonymous = 0,
    /// Holds the cluster secret: reads, writes, mounts its own segments.
    Cluster = 1,
    /// Holds the admin secret: also cluster-wide operations (`remove_all`).
    Admin = 2,
}

impl Role {
    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Role::Anonymous),
            1 => Some(Role::Cluster),
            2 => Some(Role::Admin),
            _ => None,
        }
    }

    /// Lower-case name, for logs and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Anonymous => "anonymous",
            Role::Cluster => "cluster",
            Role::Admin => "admin",
        }
    }
}

/// The cluster secret and, optionally, the admin secret. Cheap to clone;
/// `Debug` never shows either.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    cluster: Arc<str>,
    admin: Option<Arc<str>>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("cluster", &"<redacted>")
            .field("admin", &self.admin.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

fn check_token(token: &str) -> Result<Arc<str>, SecurityError> {
    let t = token.trim();
    if t.len() < MIN_TOKEN_LEN {
        return Err(SecurityError::InvalidToken(format!(
            "at least {MIN_TOKEN_LEN} characters required, got {}",
            t.len()
        )));
    }
    if t.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(SecurityError::InvalidToken(
            "whitespace or control characters inside the token".into(),
        ));
    }
    Ok(t.into())
}

impl Credential {
    /// A credential from a cluster token (at least [`MIN_TOKEN_LEN`]
    /// printable characters; surrounding whitespace is ignored).
    pub fn from_token(token: &str) -> Result<Self, SecurityError> {
        Ok(Self {
            cluster: check_token(token)?,
            admin: None,
        })
    }

    /// Add the admin secret.
    pub fn with_admin_token(mut self, token: &str) -> Result<Self, SecurityError> {
        self.admin = Some(check_token(token)?);
        Ok(self)
    }

    /// A fresh random cluster token (256 bits, hex) and admin token.
    pub fn generate() -> Self {
        let cluster = mac::to_hex(&mac::nonce::<32>());
        let admin = mac::to_hex(&mac::nonce::<32>());
        Self {
            cluster: cluster.into(),
            admin: Some(admin.into()),
        }
    }

    /// The cluster token itself, for handing to a client (printing it, an
    /// environment variable). Named so that every use is visible.
    pub fn expose_token(&self) -> &str {
        &self.cluster
    }

    /// The admin token, when this credential has one.
    pub fn expose_admin_token(&self) -> Option<&str> {
        self.admin.as_deref()
    }

    /// The same cluster secret without the admin one (what ordinary clients get).
    pub fn without_admin(&self) -> Self {
        Self {
            cluster: self.cluster.clone(),
            admin: None,
        }
    }

    /// The key proving `role`, if this credential holds it.
    pub(crate) fn key_for(&self, role: Role) -> Option<&[u8]> {
        match role {
            Role::Anonymous => None,
            Role::Cluster => Some(self.cluster.as_bytes()),
            Role::Admin => self.admin.as_deref().map(str::as_bytes),
        }
    }

    /// The strongest role this credential can prove.
    pub fn best_role(&self) -> Role {
        if self.admin.is_some() {
            Role::Admin
        } else {
            Role::Cluster
        }
    }

    /// Read a credential file (mode must be 0600 or stricter).
    pub fn load_file(path: &Path) -> Result<Self, SecurityError> {
        let file_err = |source| SecurityError::File {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(file_err)?;
        {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(SecurityError::FilePermissions(path.to_path_buf()));
            }
        }
        let text = std::fs::read_to_string(path).map_err(file_err)?;
        Self::parse_file(&text)
    }

    fn parse_file(text: &str) -> Result<Self, SecurityError> {
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let mut cluster = None;
        let mut admin = None;
        for line in &lines {
            match line.split_once('=') {
                Some(("cluster", v)) => cluster = Some(v),
                Some(("admin", v)) => admin = Some(v),
                _ if lines.len() == 1 => cluster = Some(line),
                _ => {
                    return Err(SecurityError::InvalidToken(
                        "credential file lines must be cluster=<token> or admin=<token>".into(),
                    ))
                }
            }
        }
        let cred = Self::from_token(cluster.ok_or_else(|| {
            SecurityError::InvalidToken("credential file has no cluster token".into())
        })?)?;
        match admin {
            Some(a) => cred.with_admin_token(a),
            None => Ok(cred),
        }
    }

    /// Write this credential to `path`, created with mode 0600 (an existing
    /// file is replaced).
    pub fn write_file(&self, path: &Path) -> Result<(), SecurityError> {
        use std::os::unix::fs::OpenOptionsExt;
        let file_err = |source| SecurityError::File {
            path: path.to_path_buf(),
            source,
        };
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(file_err)?;
        let mut body = format!("cluster={}\n", self.cluster);
        if let Some(a) = &self.admin {
            body.push_str(&format!("admin={a}\n"));
        }
        f.write_all(body.as_bytes()).map_err(file_err)?;
        f.sync_all().map_err(file_err)?;
        std::fs::rename(&tmp, path).map_err(file_err)
    }

    /// The credential from the environment (`MC_CLUSTER_TOKEN` [+
    /// `MC_ADMIN_TOKEN`], else the file named by `MOONCAKE_CLUSTER_TOKEN_FILE`),
    /// or `None` when neither is set.
    pub fn from_env() -> Result<Option<Self>, SecurityError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, SecurityError> {
        if let Some(t) = get(TOKEN_ENV).filter(|t| !t.trim().is_empty()) {
            let cred = Self::from_token(&t)?;
            return match get(ADMIN_TOKEN_ENV).filter(|t| !t.trim().is_empty()) {
                Some(a) => cred.with_admin_token(&a).map(Some),
                None => Ok(Some(cred)),
            };
        }
        match get(TOKEN_FILE_ENV).filter(|p| !p.is_empty()) {
            Some(p) => Self::load_file(&PathBuf::from(p)).map(Some),
            None => Ok(None),
        }
    }
}

/// Whether a listener or client authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMode {
    /// Peers must prove the credential (the default everywhere).
    Required(Credential),
    /// No authentication: every peer may do everything. Only by explicit
    /// choice (`--insecure`); logged as a warning where it is chosen.
    Insecure,
}

impl AuthMode {
    /// The mode a command runs in: `insecure` (its `--insecure` flag) wins,
    /// then an explicit token, then the environment; with none of them it is
    /// an error that says how to provide one.
    pub fn resolve(insecure: bool, token: Option<&str>) -> Result<Self, SecurityError> {
        Self::resolve_with(insecure, token, |k| std::env::var(k).ok())
    }

    fn resolve_with(
        insecure: bool,
        token: Option<&str>,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SecurityError> {
        if insecure {
            tracing::warn!("running without authentication (--insecure): any process that reaches a port can read, write and delete data");
            return Ok(AuthMode::Insecure);
        }
        if let Some(t) = token.filter(|t| !t.trim().is_empty()) {
            let cred = Credential::from_token(t)?;
            return Ok(AuthMode::Required(
                match get(ADMIN_TOKEN_ENV).filter(|t| !t.trim().is_empty()) {
                    Some(a) => cred.with_admin_token(&a)?,
                    None => cred,
                },
            ));
        }
        match Credential::from_lookup(get)? {
            Some(c) => Ok(AuthMode::Required(c)),
            None => Err(SecurityError::InvalidToken(format!(
                "no cluster credential: set {TOKEN_ENV} or {TOKEN_FILE_ENV} (mooncake up writes one), or pass --insecure"
            ))),
        }
    }

    /// Whether a peer that proved `role` may do what needs `needed`.
    pub fn allows(&self, role: Role, needed: Role) -> bool {
        match self {
            AuthMode::Insecure => true,
            AuthMode::Required(_) => role >= needed,
        }
    }

    /// The credential, when authenticating.
    pub fn credential(&self) -> Option<&Credential> {
        match self {
            AuthMode::Required(c) => Some(c),
            AuthMode::Insecure => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn short_or_spaced_tokens_are_refused() {
        assert!(Credential::from_token("short").is_err());
        assert!(Credential::from_token("has a space inside it").is_err());
        assert!(Credential::from_token("  0123456789abcdef  ").is_ok());
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = Credential::generate();
        let d = format!("{c:?}");
        assert!(!d.contains(c.expose_token()));
        assert!(!d.contains(c.expose_admin_token().unwrap()));
    }

    #[test]
    fn file_round_trip_is_0600_and_loose_files_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        let c = Credential::generate();
        c.write_file(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(Credential::load_file(&p).unwrap(), c);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Credential::load_file(&p),
            Err(SecurityError::FilePermissions(_))
        ));
    }

    #[test]
    fn bare_single_line_file_is_the_cluster_token() {
        let c = Credential::parse_file("0123456789abcdef0123\n").unwrap();
        assert_eq!(c.expose_token(), "0123456789abcdef0123");
        assert_eq!(c.best_role(), Role::Cluster);
        assert!(Credential::parse_file("a=b\nc=d\n").is_err());
    }

    #[test]
    fn resolve_order_is_flag_token_env_file() {
        let tok = "0123456789abcdef-token";
        assert_eq!(
            AuthMode::resolve_with(true, Some(tok), env(&[])).unwrap(),
            AuthMode::Insecure
        );
        let m = AuthMode::resolve_with(false, Some(tok), env(&[(TOKEN_ENV, "x")])).unwrap();
        assert_eq!(m.credential().unwrap().expose_token(), tok);
        let m = AuthMode::resolve_with(false, None, env(&[(TOKEN_ENV, tok)])).unwrap();
        assert_eq!(m.credential().unwrap().expose_token(), tok);
        let err = AuthMode::resolve_with(false, None, env(&[])).unwrap_err();
        assert!(err.to_string().contains("--insecure"), "{err}");
    }

    #[test]
    fn roles_are_ordered_and_insecure_allows_all() {
        let m = AuthMode::Required(Credential::generate());
        assert!(m.allows(Role::Admin, Role::Cluster));
        assert!(!m.allows(Role::Cluster, Role::Admin));
        assert!(!m.allows(Role::Anonymous, Role::Cluster));
        assert!(AuthMode::Insecure.allows(Role::Anonymous, Role::Admin));
    }
}
