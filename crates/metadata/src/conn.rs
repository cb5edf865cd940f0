//! Parsing of metadata connection strings. Pure: no I/O, so every accepted and
//! refused form is unit-tested here; [`crate::connect`] only dispatches on the result.
//!
//! Accepted forms (first match wins):
//! - `""` / `embedded` — the process-wide in-memory store;
//! - `P2PHANDSHAKE` — no server (peers exchange descriptors themselves);
//! - `http://host:port[/path]` — our metadata server or the reference's; a URL
//!   without a path means `/metadata`;
//! - `etcd://host:port[,host:port...]` — etcd v3, endpoints tried in order;
//! - `redis://[user:pass@]host:port[/db]` — redis;
//! - `host:port[,host:port...]` — etcd, the reference's default without a scheme.

use crate::MetadataError;

/// A parsed connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnSpec {
    Embedded,
    P2pHandshake,
    /// Full URL of the `/metadata` endpoint.
    Http(reqwest::Url),
    /// `host:port` endpoints, in the order they are tried.
    Etcd(Vec<String>),
    /// The redis URL as given (validated by the redis crate).
    Redis(String),
}

fn invalid(conn: &str, why: impl Into<String>) -> MetadataError {
    MetadataError::InvalidConnectionString(conn.to_string(), why.into())
}

/// Parse a connection string; see the module docs for the accepted forms.
pub fn parse(conn: &str) -> Result<ConnSpec, MetadataError> {
    let conn = conn.trim();
    if conn.is_empty() || conn.eq_ignore_ascii_case("embedded") {
        return Ok(ConnSpec::Embedded);
    }
    if conn == crate::P2P_HANDSHAKE {
        return Ok(ConnSpec::P2pHandshake);
    }
    let Some((scheme, rest)) = conn.split_once("://") else {
        return Ok(ConnSpec::Etcd(parse_endpoints(conn, conn)?));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "http" => parse_http(conn),
        "https" | "rediss" => Err(invalid(
            conn,
            "TLS is not supported; use a plain http:// or redis:// endpoint",
        )),
        "etcd" => Ok(ConnSpec::Etcd(parse_endpoints(
            conn,
            rest.trim_end_matches('/'),
        )?)),
        "redis" => {
            redis::Client::open(conn).map_err(|e| invalid(conn, e.to_string()))?;
            Ok(ConnSpec::Redis(conn.to_string()))
        }
        other => Err(invalid(
            conn,
            format!(
                "unknown scheme {other:?}; expected embedded, P2PHANDSHAKE, http://, etcd://, \
                 redis:// or host:port"
            ),
        )),
    }
}

fn parse_http(conn: &str) -> Result<ConnSpec, MetadataError> {
    let mut url = reqwest::Url::parse(conn).map_err(|e| invalid(conn, e.to_string()))?;
    if !matches!(url.host_str(), Some(h) if !h.is_empty()) {
        return Err(invalid(conn, "missing host"));
    }
    if url.path().is_empty() || url.path() == "/" {
        url.set_path("/metadata");
    }
    // Keys travel in our own `key=` query parameter; a query in the base URL
    // would be silently mixed into every request.
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(conn, "the URL must not carry a query or fragment"));
    }
    Ok(ConnSpec::Http(url))
}

/// `host:port[,host:port...]`, each with a non-empty host and a port in 1..=65535.
fn parse_endpoints(conn: &str, list: &str) -> Result<Vec<String>, MetadataError> {
    let mut out = Vec::new();
    for ep in list.split(',').map(str::trim) {
        let ep = ep
            .strip_prefix("http://")
            .unwrap_or(ep)
            .trim_end_matches('/');
        let (host, port) = ep.rsplit_once(':').ok_or_else(|| {
            invalid(
                conn,
                format!(
                    "endpoint {ep:?} is not host:port (expected embedded, P2PHANDSHAKE, \
                     http://..., etcd://host:port, redis://host:port or host:port)"
                ),
            )
        })?;
        let host_ok = !host.is_empty()
            && !host.contains(['/', '@', '?', '#', ' '])
            && (!host.contains(':') || (host.starts_with('[') && host.ends_with(']')));
        if !host_ok {
            return Err(invalid(conn, format!("bad host in endpoint {ep:?}")));
        }
        match port.parse::<u16>() {
            Ok(p) if p != 0 => {}
            _ => return Err(invalid(conn, format!("bad port in endpoint {ep:?}"))),
        }
        out.push(ep.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etcd(v: &[&str]) -> ConnSpec {
        ConnSpec::Etcd(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn accepted_forms() {
        assert_eq!(parse("").unwrap(), ConnSpec::Embedded);
        assert_eq!(parse(" embedded ").unwrap(), ConnSpec::Embedded);
        assert_eq!(parse("P2PHANDSHAKE").unwrap(), ConnSpec::P2pHandshake);
        assert_eq!(
            parse("http://127.0.0.1:8080/metadata").unwrap(),
            ConnSpec::Http("http://127.0.0.1:8080/metadata".parse().unwrap())
        );
        assert_eq!(
            parse("http://h:8080").unwrap(),
            ConnSpec::Http("http://h:8080/metadata".parse().unwrap())
        );
        assert_eq!(parse("etcd://a:2379").unwrap(), etcd(&["a:2379"]));
        assert_eq!(
            parse("etcd://a:2379, b:2380/").unwrap(),
            etcd(&["a:2379", "b:2380"])
        );
        assert_eq!(parse("10.0.0.1:2379").unwrap(), etcd(&["10.0.0.1:2379"]));
        assert_eq!(parse("[::1]:2379").unwrap(), etcd(&["[::1]:2379"]));
        assert_eq!(
            parse("redis://127.0.0.1:6379/2").unwrap(),
            ConnSpec::Redis("redis://127.0.0.1:6379/2".into())
        );
    }

    #[test]
    fn refused_forms() {
        for bad in [
            "etcd://",
            "etcd://host",
            "etcd://host:0",
            "etcd://host:99999",
            "etcd://a:1,,b:2",
            "localhost",
            "::1:2379",
            "ftp://x:1",
            "https://x:1/metadata",
            "http://",
            "http://h:1/metadata?x=1",
            "redis://h:notaport",
        ] {
            match parse(bad) {
                Err(MetadataError::InvalidConnectionString(s, _)) => assert_eq!(s, bad.trim()),
                other => panic!("{bad:?} should be refused, got {other:?}"),
            }
        }
    }
}
