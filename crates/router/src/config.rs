//! [`RouterConfig`]: every setting of `mooncake router`, one typed struct.
//!
//! Sources, later winning ([`RouterConfig::load`], the workspace's one configuration layer
//! `mooncake_config::layer`): defaults, a TOML file (`--config`: router keys at
//! the top level, the cost model in `[model]` / `[hardware]` sections — the
//! same sections `mooncake sim --config` reads), environment variables
//! `MOONCAKE_ROUTER_<KEY>` (upper-case key; lists comma-separated), flags.
//! Values are validated once ([`RouterConfig::validate`]); a bad value is a
//! typed error naming the key or its source.

use crate::cluster::LiveClusterConfig;
use crate::prompt::{CHARS_PER_TOKEN, DEFAULT_BLOCK_CHARS, DEFAULT_MAX_TOKENS};
use mooncake_conductor::cache::PolicyKind;
use mooncake_conductor::cost::{CostConfig, CostModel};
use mooncake_conductor::policy::admission::{Admission, AdmissionMode};
use mooncake_conductor::policy::{PolicyName, Slo};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::str::FromStr;

/// Where the router's settings come from: `MOONCAKE_ROUTER_<KEY>`.
pub const LAYERS: mooncake_config::Layers = mooncake_config::Layers {
    component: "ROUTER",
    aliases: &[mooncake_config::Alias::new(
        "MOONCAKE_ROUTER_WORKER",
        "workers",
    )],
};

/// A configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// File path.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for the router.
    #[error("invalid router config {path}: {message}")]
    Parse {
        /// File path.
        path: String,
        /// Parser message.
        message: String,
    },
    /// A key is unknown or its value is out of range.
    #[error("router config `{key}`: {message}")]
    Invalid {
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A value from the environment or a flag that does not read as its key's type.
    #[error(transparent)]
    Layer(#[from] mooncake_config::ConfigError),
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// How requests reach the engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServeMode {
    /// Prefill instances and decode instances (`prefill`, `decode`): two
    /// legs per request with a KV handoff (vLLM's disaggregated proxy flow).
    #[default]
    Disaggregated,
    /// Engines that prefill and decode (`workers`): one leg per request,
    /// placed by the same policies (like sglang-router in front of SGLang).
    Colocated,
}

impl FromStr for ServeMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "disaggregated" | "pd" => Ok(ServeMode::Disaggregated),
            "colocated" | "co-located" => Ok(ServeMode::Colocated),
            _ => Err(format!(
                "unknown mode `{s}` (expected disaggregated or colocated)"
            )),
        }
    }
}

/// Settings of the live router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// Bind address.
    pub host: String,
    /// Bind port (0 = any free port).
    pub port: u16,
    /// Disaggregated (prefill + decode instances) or colocated (workers).
    #[serde(deserialize_with = "mooncake_config::layer::from_str")]
    pub mode: ServeMode,
    /// Prefill instances' base URLs (`http://host:port`).
    pub prefill: Vec<String>,
    /// Decode instances' base URLs.
    pub decode: Vec<String>,
    /// Colocated mode: the engines' base URLs.
    pub workers: Vec<String>,
    /// Scheduling policy (the simulator's names).
    #[serde(deserialize_with = "mooncake_config::layer::from_str")]
    pub policy: PolicyName,
    /// Admission control after the policy: none, early, predictive.
    #[serde(deserialize_with = "mooncake_config::layer::from_str")]
    pub admission: AdmissionMode,
    /// Reject when the decode memory share would exceed this.
    pub admission_threshold: f64,
    /// TTFT SLO, seconds.
    pub slo_ttft: f64,
    /// TBT SLO, seconds.
    pub slo_tbt: f64,
    /// Characters per prefix block (≈ 4 per token).
    pub block_chars: usize,
    /// Output tokens assumed when a request gives no `max_tokens`.
    pub default_max_tokens: u32,
    /// Tokens each prefill instance's approximate cache holds (default: the
    /// cost model's KV capacity of one node).
    #[serde(deserialize_with = "mooncake_config::layer::opt_from_str")]
    pub cache_tokens: Option<u64>,
    /// Eviction policy of the approximate caches: lru, lfu, length-aware.
    #[serde(deserialize_with = "mooncake_config::layer::from_str")]
    pub cache_policy: PolicyKind,
    /// Seconds a failed instance is skipped.
    pub backoff_secs: f64,
    /// Seconds to wait for a TCP connection to an instance.
    pub connect_timeout_secs: f64,
    /// Seconds a prefill request may take in total.
    pub prefill_timeout_secs: f64,
    /// Learn each prefill instance's speed relative to the cost model from
    /// measured answer times and scale its predictions (see
    /// [`LiveClusterConfig::calibrate`]).
    pub calibrate: bool,
    /// Seed of randomised policies.
    pub seed: u64,
    /// KV-event PUB endpoints (`tcp://host:5557`), one per prefill instance
    /// (colocated: per worker), same order; empty entries (`""`) for
    /// instances without events. Non-empty switches prompts to the engines'
    /// token blocks ([`Self::block_size`]) and those instances' prefix
    /// caches to exact (built from their events).
    pub kv_events: Vec<String>,
    /// KV-event replay (ROUTER) endpoints, same order as `kv_events`.
    pub kv_replay: Vec<String>,
    /// Engines' KV block size in tokens (vLLM `--block-size`).
    pub block_size: u32,
    /// Engines' `--prefix-caching-hash-algo` (sha256 or sha256_cbor).
    pub hash_algo: String,
    /// Engines' `NONE_HASH` seed: their `PYTHONHASHSEED`, else vLLM's
    /// default `vllm-none-hash`.
    pub hash_seed: String,
    /// Seconds between active health probes of unhealthy instances (0: off).
    pub probe_secs: f64,
    /// Most tokens (prompt + output) one request may need: the model's
    /// context length. Larger requests get a 400 (0: no limit).
    pub max_model_len: u64,
    /// The cost model (`[model]` / `[hardware]` in the file).
    #[serde(skip)]
    pub cost: CostConfig,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8000,
            mode: ServeMode::Disaggregated,
            prefill: Vec::new(),
            decode: Vec::new(),
            workers: Vec::new(),
            policy: PolicyName::Mooncake,
            admission: AdmissionMode::None,
            admission_threshold: 1.0,
            slo_ttft: 30.0,
            slo_tbt: 0.1,
            block_chars: DEFAULT_BLOCK_CHARS,
            default_max_tokens: DEFAULT_MAX_TOKENS,
            cache_tokens: None,
            cache_policy: PolicyKind::Lru,
            backoff_secs: 10.0,
            connect_timeout_secs: 2.0,
            prefill_timeout_secs: 600.0,
            calibrate: true,
            seed: 42,
            kv_events: Vec::new(),
            kv_replay: Vec::new(),
            block_size: crate::kv_events::hash::DEFAULT_BLOCK_SIZE,
            hash_algo: "sha256".into(),
            hash_seed: crate::kv_events::hash::DEFAULT_SEED.into(),
            probe_secs: 1.0,
            max_model_len: 0,
            cost: CostConfig::default(),
        }
    }
}

impl RouterConfig {
    /// Parses a TOML document: router keys at the top level, optional
    /// `[model]` / `[hardware]` cost-model sections.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let perr = |message: String| ConfigError::Parse {
            path: origin.to_string(),
            message,
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| perr(e.to_string()))?;
        let mut cost = toml::Table::new();
        for section in ["model", "hardware"] {
            if let Some(v) = table.remove(section) {
                cost.insert(section.to_string(), v);
            }
        }
        let mut cfg: RouterConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| perr(e.to_string()))?;
        cfg.cost = toml::Value::Table(cost)
            .try_into()
            .map_err(|e: toml::de::Error| perr(e.to_string()))?;
        Ok(cfg)
    }

    /// Reads [`RouterConfig::from_toml_str`] from a file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: p.clone(),
            source,
        })?;
        Self::from_toml_str(&text, &p)
    }

    /// Defaults < `file` < `env` (`MOONCAKE_ROUTER_<KEY>`; pass `std::env::vars()`) <
    /// `flags` (a struct of `Option`s named as the keys), validated.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &impl Serialize,
    ) -> Result<Self, ConfigError> {
        let base = match file {
            Some(p) => Self::from_file(p)?,
            None => Self::default(),
        };
        let mut cfg: RouterConfig = LAYERS.load_over(&base, None, env, flags)?;
        // The cost model sections come from the file only.
        cfg.cost = base.cost;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Applies `MOONCAKE_ROUTER_<KEY>` variables from `vars` (others are ignored).
    pub fn apply_env<I: IntoIterator<Item = (String, String)>>(
        &mut self,
        vars: I,
    ) -> Result<(), ConfigError> {
        let cost = std::mem::take(&mut self.cost);
        *self = LAYERS.apply_env(&*self, vars)?;
        self.cost = cost;
        Ok(())
    }

    /// The instances routed to as prefill (colocated: the workers).
    pub fn prefill_urls(&self) -> &[String] {
        match self.mode {
            ServeMode::Disaggregated => &self.prefill,
            ServeMode::Colocated => &self.workers,
        }
    }

    /// The instances routed to as decode (colocated: the workers).
    pub fn decode_urls(&self) -> &[String] {
        match self.mode {
            ServeMode::Disaggregated => &self.decode,
            ServeMode::Colocated => &self.workers,
        }
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        type Lists<'a> = [(&'static str, &'a Vec<String>)];
        let (used, unused): (&Lists, &Lists) = match self.mode {
            ServeMode::Disaggregated => (
                &[("prefill", &self.prefill), ("decode", &self.decode)],
                &[("workers", &self.workers)],
            ),
            ServeMode::Colocated => (
                &[("workers", &self.workers)],
                &[("prefill", &self.prefill), ("decode", &self.decode)],
            ),
        };
        for (key, urls) in unused {
            if !urls.is_empty() {
                return Err(invalid(
                    key,
                    format!("not used in {:?} mode (see `mode`)", self.mode),
                ));
            }
        }
        for &(key, urls) in used {
            if urls.is_empty() {
                return Err(invalid(key, "at least one instance URL is required"));
            }
            for u in urls {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return Err(invalid(key, format!("`{u}` is not an http(s) URL")));
                }
            }
        }
        let positive = [
            ("slo_ttft", self.slo_ttft),
            ("slo_tbt", self.slo_tbt),
            ("admission_threshold", self.admission_threshold),
            ("connect_timeout_secs", self.connect_timeout_secs),
            ("prefill_timeout_secs", self.prefill_timeout_secs),
        ];
        for (key, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(invalid(key, format!("must be > 0, got {v}")));
            }
        }
        if !(self.backoff_secs.is_finite() && self.backoff_secs >= 0.0) {
            return Err(invalid("backoff_secs", "must be >= 0"));
        }
        if self.block_chars < CHARS_PER_TOKEN {
            return Err(invalid(
                "block_chars",
                format!("must be at least {CHARS_PER_TOKEN}"),
            ));
        }
        let engines = match self.mode {
            ServeMode::Colocated => self.workers.len(),
            ServeMode::Disaggregated => self.prefill.len(),
        };
        if !self.kv_events.is_empty() {
            if self.kv_events.len() != engines {
                return Err(invalid(
                    "kv_events",
                    format!(
                        "{} endpoints for {engines} prefill instances",
                        self.kv_events.len()
                    ),
                ));
            }
            if !(self.kv_replay.is_empty() || self.kv_replay.len() == engines) {
                return Err(invalid("kv_replay", "one endpoint per kv_events entry"));
            }
            for e in self.kv_events.iter().chain(&self.kv_replay) {
                if !(e.is_empty() || e.starts_with("tcp://")) {
                    return Err(invalid(
                        "kv_events",
                        format!("`{e}` is not tcp://host:port"),
                    ));
                }
            }
        }
        if self.block_size == 0 {
            return Err(invalid("block_size", "must be > 0"));
        }
        self.hash_algo
            .parse::<crate::kv_events::hash::HashAlgo>()
            .map_err(|e| invalid("hash_algo", e))?;
        if !(self.probe_secs.is_finite() && self.probe_secs >= 0.0) {
            return Err(invalid("probe_secs", "must be >= 0"));
        }
        if self.cache_tokens == Some(0) {
            return Err(invalid("cache_tokens", "must be > 0"));
        }
        self.cost
            .validate()
            .map_err(|e| invalid("model/hardware", e.to_string()))?;
        Ok(())
    }

    /// Whether any instance publishes KV events (prompts are then cut into
    /// the engines' token blocks).
    pub fn events_enabled(&self) -> bool {
        self.kv_events.iter().any(|e| !e.is_empty())
    }

    /// How prompts are cut into blocks.
    pub fn block_scheme(&self) -> crate::prompt::BlockScheme {
        if self.events_enabled() {
            crate::prompt::BlockScheme::Tokens(crate::kv_events::hash::BlockHasher::new(
                self.hash_algo.parse().unwrap_or_default(),
                self.block_size,
                &self.hash_seed,
            ))
        } else {
            crate::prompt::BlockScheme::Chars(self.block_chars)
        }
    }

    /// Tokens per block (the engines' block size with events, else
    /// estimated from `block_chars`).
    pub fn block_tokens(&self) -> u32 {
        if self.events_enabled() {
            return self.block_size.max(1);
        }
        u32::try_from((self.block_chars / CHARS_PER_TOKEN).max(1)).unwrap_or(u32::MAX)
    }

    /// The [`LiveClusterConfig`] these settings describe.
    pub fn cluster_config(&self) -> Result<LiveClusterConfig, ConfigError> {
        self.validate()?;
        let cost = CostModel::new(self.cost.clone())
            .map_err(|e| invalid("model/hardware", e.to_string()))?;
        let cap = cost.kv_capacity_tokens();
        let bt = self.block_tokens();
        let cache_tokens = self.cache_tokens.unwrap_or(cap);
        Ok(LiveClusterConfig {
            prefill_cache_blocks: (cache_tokens / bt as u64).max(1) as usize,
            decode_capacity_tokens: cap,
            cost,
            slo: Slo {
                ttft_s: self.slo_ttft,
                tbt_s: self.slo_tbt,
            },
            block_tokens: bt,
            cache_policy: self.cache_policy,
            backoff_s: self.backoff_secs,
            admission: Admission {
                mode: self.admission,
                threshold: self.admission_threshold,
            },
            calibrate: self.calibrate,
            colocated: self.mode == ServeMode::Colocated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_env_flags_in_order() {
        let text = r#"
            prefill = ["http://a:1", "http://b:2"]
            decode = ["http://c:3"]
            policy = "cache-aware"
            slo_ttft = 5.0
            [hardware]
            tflops_per_gpu = 989.0
        "#;
        let mut cfg = RouterConfig::from_toml_str(text, "t.toml").unwrap();
        assert_eq!(cfg.prefill.len(), 2);
        assert_eq!(cfg.policy, PolicyName::CacheAware);
        assert_eq!(cfg.cost.hardware.tflops_per_gpu, 989.0);
        cfg.apply_env([
            ("MOONCAKE_ROUTER_POLICY".to_string(), "dynamo".to_string()),
            (
                "MOONCAKE_ROUTER_DECODE".into(),
                "http://x:1, http://y:2".into(),
            ),
            ("PATH".into(), "/bin".into()),
        ])
        .unwrap();
        assert_eq!(cfg.policy, PolicyName::Dynamo);
        assert_eq!(cfg.decode, vec!["http://x:1", "http://y:2"]);
        #[derive(Serialize)]
        struct Flags {
            slo_ttft: Option<f64>,
            cache_tokens: Option<u64>,
        }
        let flags = Flags {
            slo_ttft: Some(7.0),
            cache_tokens: None,
        };
        let dir = std::env::temp_dir().join(format!("mooncake-router-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.toml");
        std::fs::write(&path, text).unwrap();
        let env = [
            ("MOONCAKE_ROUTER_POLICY", "Dynamo"),
            ("MOONCAKE_ROUTER_SLO_TTFT", "6"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let cfg = RouterConfig::load(Some(&path), env, &flags).unwrap();
        let _ = std::fs::remove_dir_all(dir);
        assert_eq!(cfg.slo_ttft, 7.0, "flag over env");
        assert_eq!(cfg.policy, PolicyName::Dynamo, "FromStr spellings from env");
        assert_eq!(
            cfg.cost.hardware.tflops_per_gpu, 989.0,
            "the file's cost model kept"
        );
        cfg.validate().unwrap();
        let cc = cfg.cluster_config().unwrap();
        assert_eq!(cc.block_tokens, 512);
        assert_eq!(cc.slo.ttft_s, 7.0);
        let mut c = RouterConfig::default();
        c.apply_env([("MOONCAKE_ROUTER_KV_EVENTS".into(), "tcp://a:1,".into())])
            .unwrap();
        assert_eq!(c.kv_events, ["tcp://a:1", ""], "empty entries kept");
    }

    #[test]
    fn bad_values_are_typed_errors() {
        let mut cfg = RouterConfig::default();
        assert!(
            matches!(cfg.validate(), Err(ConfigError::Invalid { key, .. }) if key == "prefill")
        );
        cfg.prefill = vec!["a:1".into()];
        cfg.decode = vec!["http://d".into()];
        assert!(
            matches!(cfg.validate(), Err(ConfigError::Invalid { key, .. }) if key == "prefill")
        );
        cfg.prefill = vec!["http://a:1".into()];
        cfg.validate().unwrap();
        let env = |k: &str, v: &str| [(k.to_string(), v.to_string())];
        assert!(cfg
            .clone()
            .apply_env(env("MOONCAKE_ROUTER_POLICY", "fastest"))
            .is_err());
        assert!(cfg
            .clone()
            .apply_env(env("MOONCAKE_ROUTER_PORT", "99999"))
            .is_err());
        cfg.apply_env(env("MOONCAKE_ROUTER_MODE", "colocated"))
            .unwrap();
        assert!(
            matches!(cfg.validate(), Err(ConfigError::Invalid { key, .. }) if key == "prefill")
        );
        cfg.prefill.clear();
        cfg.decode.clear();
        cfg.apply_env(env("MOONCAKE_ROUTER_WORKER", "http://w1,http://w2"))
            .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.prefill_urls(), cfg.decode_urls());
        assert!(cfg.cluster_config().unwrap().colocated);
        assert!(cfg
            .clone()
            .apply_env(env("MOONCAKE_ROUTER_MODE", "sideways"))
            .is_err());
        cfg.apply_env(env("MOONCAKE_ROUTER_SLO_TBT", "0")).unwrap();
        assert!(cfg.validate().is_err());
        assert!(matches!(
            RouterConfig::from_toml_str("polcy = 1", "x"),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            RouterConfig::from_toml_str("[model]\nlayerz = 1", "x"),
            Err(ConfigError::Parse { .. })
        ));
    }
}
