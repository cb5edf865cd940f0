//! The one configuration layer: **defaults < TOML file < environment < flags**, for any
//! component whose settings are one serde struct (its `Default` is the defaults).
//!
//! - File: a TOML document whose keys are the struct's field names.
//! - Environment: `MOONCAKE_<COMPONENT>_<FIELD>` (upper case) for every field, plus the
//!   reference's own variable names as [`Alias`]es (`MC_METADATA_SERVER`, ...). A prefixed
//!   variable wins over an alias of the same field. Values are read by the field's type in the
//!   defaults: numbers, booleans (`true/false/1/0/yes/no/on/off`), comma-separated lists, and
//!   anything else as a string (so sizes and durations take [`crate::units`]' spellings).
//! - Flags: any `Serialize` struct of `Option`s whose field names are the config's (clap's
//!   derived `Args` with `#[derive(Serialize)]`); `None` (flag not given) changes nothing, so a
//!   command never restates a default.
//!
//! The merged document is deserialized once, so every layer is checked by the same serde code
//! (unknown file keys are refused when the struct says `deny_unknown_fields`), and an error
//! names the source of the value it is about.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;
use toml::{Table, Value};

/// A configuration that could not be assembled; the message names the file, variable or flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {0}: {1}")]
    Io(String, std::io::Error),
    #[error("config file {0}: {1}")]
    File(String, String),
    #[error("{source_name}: {reason}")]
    Value { source_name: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

/// A variable of the reference's that sets one field (`MC_METADATA_SERVER` → `metadata_server`).
/// `unit`, when set, is appended to a bare number (`MC_TRANSFER_TIMEOUT=30` is seconds: `"s"`).
#[derive(Debug, Clone, Copy)]
pub struct Alias {
    pub env: &'static str,
    pub field: &'static str,
    pub unit: Option<&'static str>,
}

impl Alias {
    pub const fn new(env: &'static str, field: &'static str) -> Self {
        Alias {
            env,
            field,
            unit: None,
        }
    }

    /// An alias whose bare numbers are in `unit` (`"s"`, `"ms"`).
    pub const fn with_unit(env: &'static str, field: &'static str, unit: &'static str) -> Self {
        Alias {
            env,
            field,
            unit: Some(unit),
        }
    }
}

/// Where a component's settings come from: its name (for `MOONCAKE_<COMPONENT>_`) and the
/// reference's variable names.
#[derive(Debug, Clone, Copy)]
pub struct Layers {
    /// Upper-case component name: `MASTER`, `CLIENT`, `TRANSFER`, ...
    pub component: &'static str,
    /// The reference's environment variables for this component.
    pub aliases: &'static [Alias],
}

/// The flags of a caller that has none.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct NoFlags {}

/// Parse a boolean as gflags and the reference's scripts write it.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "t" | "y" | "on" => Some(true),
        "false" | "0" | "no" | "f" | "n" | "off" => Some(false),
        _ => None,
    }
}

impl Layers {
    /// The environment variable of `field`: `MOONCAKE_<COMPONENT>_<FIELD>`.
    pub fn env_name(&self, field: &str) -> String {
        format!("MOONCAKE_{}_{}", self.component, field.to_ascii_uppercase())
    }

    /// Assemble `T` from its defaults, `file` (TOML), `env` (pass `std::env::vars()`) and
    /// `flags` (a struct of `Option`s named as `T`'s fields; `&NoFlags {}` for none).
    pub fn load<T, F>(
        &self,
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &F,
    ) -> Result<T, ConfigError>
    where
        T: Serialize + DeserializeOwned + Default,
        F: Serialize + ?Sized,
    {
        self.load_over(&T::default(), file, env, flags)
    }

    /// [`Layers::load`] with the file's `(name, text)` given.
    pub fn load_str<T, F>(
        &self,
        file: Option<(&str, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &F,
    ) -> Result<T, ConfigError>
    where
        T: Serialize + DeserializeOwned + Default,
        F: Serialize + ?Sized,
    {
        self.assemble(&T::default(), file, env, flags)
    }

    /// Apply only the environment layer to `base` (settings already made in code, which the
    /// environment overrides): for callers that have no file or flags of their own.
    pub fn apply_env<T>(
        &self,
        base: &T,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<T, ConfigError>
    where
        T: Serialize + DeserializeOwned,
    {
        self.assemble(base, None, env, &NoFlags {})
    }

    /// [`Layers::load`] over `base` instead of `T::default()` (a command whose own defaults
    /// differ from the struct's, such as a segment defaulting to `P2PHANDSHAKE`).
    pub fn load_over<T, F>(
        &self,
        base: &T,
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &F,
    ) -> Result<T, ConfigError>
    where
        T: Serialize + DeserializeOwned,
        F: Serialize + ?Sized,
    {
        let text = read(file)?;
        self.assemble(
            base,
            text.as_ref().map(|(n, t)| (n.as_str(), t.as_str())),
            env,
            flags,
        )
    }

    fn assemble<T, F>(
        &self,
        base: &T,
        file: Option<(&str, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &F,
    ) -> Result<T, ConfigError>
    where
        T: Serialize + DeserializeOwned,
        F: Serialize + ?Sized,
    {
        let defaults = Table::try_from(base)
            .map_err(|e| ConfigError::Invalid(format!("{} defaults: {e}", self.component)))?;
        let mut doc = defaults.clone();
        // Which layer set each top-level key, for error messages.
        let mut origin: BTreeMap<String, String> = BTreeMap::new();

        if let Some((name, text)) = file {
            let t: Table = text
                .parse()
                .map_err(|e: toml::de::Error| ConfigError::File(name.into(), e.to_string()))?;
            // Check the file alone first, so its own mistakes (unknown keys, types) name it.
            merged::<T>(&defaults, &t).map_err(|e| ConfigError::File(name.into(), e))?;
            for k in t.keys() {
                origin.insert(k.clone(), format!("config file {name}"));
            }
            merge(&mut doc, t);
        }

        let mut vars: Vec<(String, String)> = env.into_iter().collect();
        vars.sort();
        let prefix = format!("MOONCAKE_{}_", self.component);
        // Aliases first, so the prefixed names win.
        let mut sets: Vec<(String, String, String)> = Vec::new();
        for a in self.aliases {
            if let Some((_, v)) = vars.iter().find(|(k, v)| k == a.env && !v.is_empty()) {
                let v = match a.unit {
                    Some(u) if v.trim().parse::<f64>().is_ok() => format!("{}{u}", v.trim()),
                    _ => v.clone(),
                };
                sets.push((a.field.to_string(), v, a.env.to_string()));
            }
        }
        for (k, v) in &vars {
            let Some(rest) = k.strip_prefix(&prefix) else {
                continue;
            };
            let field = rest.to_ascii_lowercase();
            if defaults.contains_key(&field) || self.aliases.iter().any(|a| a.field == field) {
                sets.push((field, v.clone(), k.clone()));
            }
        }
        for (field, v, var) in sets {
            let value = typed(defaults.get(&field), &v).map_err(|reason| ConfigError::Value {
                source_name: format!("{var}={v:?}"),
                reason,
            })?;
            doc.insert(field.clone(), value);
            origin.insert(field, var);
        }

        let flags = Table::try_from(flags)
            .map_err(|e| ConfigError::Invalid(format!("command-line flags: {e}")))?;
        for k in flags.keys() {
            origin.insert(k.clone(), format!("--{k}"));
        }
        merge(&mut doc, flags);

        let text = toml::to_string(&doc).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        toml::from_str(&text).map_err(|e| {
            let msg = e.to_string();
            let source_name = origin
                .iter()
                .filter(|(k, _)| msg.contains(&format!("{k} =")) || msg.contains(&format!("`{k}`")))
                .map(|(_, o)| o.clone())
                .next()
                .unwrap_or_else(|| format!("{} configuration", self.component.to_lowercase()));
            ConfigError::Value {
                source_name,
                reason: one_line(&msg),
            }
        })
    }
}

/// The file's `(name, text)`, if there is one.
fn read(file: Option<&Path>) -> Result<Option<(String, String)>, ConfigError> {
    let Some(p) = file else { return Ok(None) };
    let name = p.display().to_string();
    let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Io(name.clone(), e))?;
    Ok(Some((name, text)))
}

/// Deserialize `defaults` overlaid with `over` (to check one layer on its own).
fn merged<T: DeserializeOwned>(defaults: &Table, over: &Table) -> Result<T, String> {
    let mut doc = defaults.clone();
    merge(&mut doc, over.clone());
    let text = toml::to_string(&doc).map_err(|e| e.to_string())?;
    toml::from_str(&text).map_err(|e| one_line(&e.to_string()))
}

/// toml's multi-line error report as one line: the key its excerpt shows, and its message.
fn one_line(msg: &str) -> String {
    let lines: Vec<&str> = msg.lines().map(str::trim).collect();
    let excerpt = |l: &&str| l.starts_with('|') || l.contains(" | ") || l.starts_with('^');
    let text = lines
        .iter()
        .rev()
        .find(|l| !l.is_empty() && !excerpt(l))
        .map(|l| l.to_string())
        .unwrap_or_else(|| msg.trim().to_string());
    let key = lines
        .iter()
        .filter_map(|l| l.split_once(" | ")?.1.split_once(" = "))
        .map(|(k, _)| k.trim())
        .next();
    match key {
        Some(k) if !text.contains(k) => format!("{k}: {text}"),
        _ => text,
    }
}

/// Overlay `over` onto `base`; tables merge key by key, anything else replaces.
fn merge(base: &mut Table, over: Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Serde for a field whose type parses itself from a string (`FromStr`, with its aliases and
/// case rules), so files, variables and flags accept the same spellings:
/// `#[serde(deserialize_with = "mooncake_config::layer::from_str")]`.
pub fn from_str<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let s = <String as serde::Deserialize>::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

/// [`from_str`] for an `Option` field that may also be written as a number
/// (`cache_tokens = 1000`, `MOONCAKE_ROUTER_CACHE_TOKENS=1000`):
/// `#[serde(default, deserialize_with = "mooncake_config::layer::opt_from_str")]`.
pub fn opt_from_str<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Repr {
        U(u64),
        I(i64),
        F(f64),
        S(String),
    }
    let text = match <Option<Repr> as serde::Deserialize>::deserialize(d)? {
        None => return Ok(None),
        Some(Repr::U(n)) => n.to_string(),
        Some(Repr::I(n)) => n.to_string(),
        Some(Repr::F(x)) => x.to_string(),
        Some(Repr::S(s)) => s,
    };
    text.trim()
        .parse()
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// An environment value as the type the field has in the defaults.
fn typed(default: Option<&Value>, v: &str) -> Result<Value, String> {
    let t = v.trim();
    Ok(match default {
        Some(Value::Boolean(_)) => Value::Boolean(
            parse_bool(t)
                .ok_or_else(|| "expected a boolean (true/false, 1/0, yes/no)".to_string())?,
        ),
        // A string that is not a plain integer goes to the field's own parser (`1GiB`, `5s`).
        Some(Value::Integer(_)) => match t.parse::<i64>() {
            Ok(n) => Value::Integer(n),
            Err(_) => Value::String(t.to_string()),
        },
        Some(Value::Float(_)) => {
            Value::Float(t.parse().map_err(|_| "expected a number".to_string())?)
        }
        // Comma-separated; empty entries are kept (`tcp://a,,tcp://c`), an empty value is [].
        Some(Value::Array(_)) if t.is_empty() => Value::Array(Vec::new()),
        Some(Value::Array(items)) => Value::Array(
            t.split(',')
                .map(|s| typed(items.first(), s.trim()))
                .collect::<Result<_, _>>()?,
        ),
        // Strings, and fields with no value in the defaults (an unset `Option`: a numeric one
        // reads strings with [`from_str`]).
        _ => Value::String(v.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Demo {
        host: String,
        port: u16,
        ratio: f64,
        enabled: bool,
        #[serde(with = "crate::units::serde_size")]
        segment: u64,
        #[serde(with = "crate::units::serde_duration_ms")]
        timeout: Duration,
        protocols: Vec<String>,
        token: Option<String>,
    }

    impl Default for Demo {
        fn default() -> Self {
            Demo {
                host: "127.0.0.1".into(),
                port: 50051,
                ratio: 0.9,
                enabled: false,
                segment: 1 << 30,
                timeout: Duration::from_secs(30),
                protocols: vec!["tcp".into()],
                token: None,
            }
        }
    }

    #[derive(Serialize, Default)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        #[serde(skip_serializing_if = "Option::is_none")]
        segment: Option<u64>,
    }

    const LAYERS: Layers = Layers {
        component: "DEMO",
        aliases: &[
            Alias::new("MC_HOST", "host"),
            Alias::with_unit("MC_TIMEOUT", "timeout", "s"),
            Alias::new("MC_TOKEN", "token"),
        ],
    };

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_file_env_flags_in_order() {
        let d: Demo = LAYERS.load_str(None, env(&[]), &NoFlags {}).unwrap();
        assert_eq!(d, Demo::default());

        let file = Some((
            "demo.toml",
            "port = 6000\nsegment = \"2GiB\"\nratio = 0.5\nhost = \"a\"",
        ));
        let d: Demo = LAYERS
            .load_str(
                file,
                env(&[
                    ("MOONCAKE_DEMO_PORT", "7000"),
                    ("MOONCAKE_DEMO_ENABLED", "yes"),
                    ("MOONCAKE_DEMO_PROTOCOLS", "tcp, shm"),
                    ("MOONCAKE_DEMO_SEGMENT", "1.5GiB"),
                    ("MC_HOST", "b"),
                    ("MC_TIMEOUT", "2"),
                    ("MC_TOKEN", "secret"),
                    ("MOONCAKE_OTHER_PORT", "1"),
                ]),
                &Flags {
                    port: Some(8000),
                    segment: None,
                },
            )
            .unwrap();
        assert_eq!(d.port, 8000, "flags win over env and file");
        assert_eq!(
            d.segment,
            3 << 29,
            "env wins over the file; not given as a flag"
        );
        assert_eq!(d.ratio, 0.5, "the file wins over defaults");
        assert_eq!(d.host, "b", "the reference's alias");
        assert_eq!(
            d.timeout,
            Duration::from_secs(2),
            "an alias's bare number has its unit"
        );
        assert_eq!(
            d.token.as_deref(),
            Some("secret"),
            "an Option field set by env"
        );
        assert!(d.enabled);
        assert_eq!(d.protocols, ["tcp", "shm"]);

        // The environment over settings made in code.
        let base = Demo {
            port: 1,
            ..Demo::default()
        };
        let d = LAYERS
            .apply_env(&base, env(&[("MOONCAKE_DEMO_ENABLED", "1")]))
            .unwrap();
        assert_eq!((d.port, d.enabled), (1, true));

        // The prefixed variable wins over the alias.
        let d: Demo = LAYERS
            .load_str(
                None,
                env(&[("MC_HOST", "b"), ("MOONCAKE_DEMO_HOST", "c")]),
                &NoFlags {},
            )
            .unwrap();
        assert_eq!(d.host, "c");
    }

    #[test]
    fn errors_name_their_source() {
        let e = LAYERS
            .load_str::<Demo, _>(Some(("x.toml", "prot = 1")), env(&[]), &NoFlags {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.toml") && e.contains("prot"), "{e}");
        // (variable, value, a word the message must contain)
        for (var, value, word) in [
            ("MOONCAKE_DEMO_ENABLED", "maybe", "boolean"),
            ("MOONCAKE_DEMO_SEGMENT", "1 parsec", "parsec"),
            ("MOONCAKE_DEMO_PORT", "99999", "port"),
        ] {
            let e = LAYERS
                .load_str::<Demo, _>(None, env(&[(var, value)]), &NoFlags {})
                .unwrap_err()
                .to_string();
            assert!(e.contains(var) && e.contains(word), "{e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }
}
