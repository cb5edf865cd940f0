//! Synthetic traces with a chosen prefix-sharing structure, length
//! distributions and arrival burstiness (`mooncake trace synth`), in the
//! published traces' format, for testing policies on workloads they were
//! not tuned on.
//!
//! The model: requests belong to conversations. A new conversation starts
//! with one of `system_prompts` shared system prompts (every conversation
//! using it shares its blocks) followed by fresh user tokens; a returning
//! one (probability `continue_share`, uniformly among the last
//! `active_conversations`) sends its whole history (previous prompt +
//! previous output) plus fresh tokens, so its prompt extends the previous
//! turn's prefix. New tokens and outputs are log-normal with the given means
//! and shape; prompts are capped at `max_input_tokens` (a conversation that
//! would exceed it ends and a new one starts). Gaps between arrivals are
//! gamma-distributed with mean `1 / rate_rps` and coefficient of variation
//! `burstiness` (1 = Poisson, larger = burstier).
//!
//! Invariants (tested): the output is deterministic in the seed; timestamps
//! are non-decreasing; every record has `ceil(input / 512)` hash ids; a
//! continuing turn's hash ids start with every full block of its previous
//! turn's prompt.

use super::{TraceRecord, TRACE_BLOCK_TOKENS};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::str::FromStr;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthConfig {
    /// Requests to generate.
    pub requests: usize,
    /// Mean arrival rate, requests per second.
    pub rate_rps: f64,
    /// Coefficient of variation of the gaps between arrivals (1 = Poisson).
    pub burstiness: f64,
    /// Distinct shared system prompts (0: none).
    pub system_prompts: usize,
    /// Tokens of each system prompt.
    pub system_prompt_tokens: u32,
    /// Probability that a request continues an active conversation.
    pub continue_share: f64,
    /// Conversations a returning request chooses among (the most recent).
    pub active_conversations: usize,
    /// Mean fresh prompt tokens per request.
    pub new_tokens_mean: f64,
    /// Log-normal shape (σ of the log) of the fresh tokens.
    pub new_tokens_sigma: f64,
    /// Mean output tokens.
    pub output_tokens_mean: f64,
    /// Log-normal shape of the outputs.
    pub output_tokens_sigma: f64,
    /// Longest prompt.
    pub max_input_tokens: u32,
    /// Random seed.
    pub seed: u64,
}

/// Named starting points for [`SynthConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// Multi-turn chat, one short shared system prompt (like the published
    /// conversation trace: most reuse is a conversation's own history).
    Chat,
    /// Tool & agent: a few long shared system prompts, short additions.
    Agent,
    /// Long single-shot documents, no sharing at all.
    Documents,
    /// Chat arriving in bursts (gap CV 4).
    Bursty,
    /// One very hot shared prompt: every request starts with the same 16k
    /// tokens (hot-spot replication).
    HotPrompt,
}

impl Preset {
    /// Every preset.
    pub const ALL: [Preset; 5] = [
        Preset::Chat,
        Preset::Agent,
        Preset::Documents,
        Preset::Bursty,
        Preset::HotPrompt,
    ];

    /// The CLI name.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Chat => "chat",
            Preset::Agent => "agent",
            Preset::Documents => "documents",
            Preset::Bursty => "bursty",
            Preset::HotPrompt => "hot-prompt",
        }
    }

    /// The preset's settings.
    pub fn config(self) -> SynthConfig {
        let chat = SynthConfig {
            requests: 10_000,
            rate_rps: 4.0,
            burstiness: 1.0,
            system_prompts: 1,
            system_prompt_tokens: 512,
            continue_share: 0.6,
            active_conversations: 400,
            new_tokens_mean: 2_500.0,
            new_tokens_sigma: 1.0,
            output_tokens_mean: 350.0,
            output_tokens_sigma: 0.8,
            max_input_tokens: 131_072,
            seed: 1,
        };
        match self {
            Preset::Chat => chat,
            Preset::Agent => SynthConfig {
                rate_rps: 6.0,
                system_prompts: 8,
                system_prompt_tokens: 6_144,
                continue_share: 0.5,
                new_tokens_mean: 1_200.0,
                output_tokens_mean: 180.0,
                ..chat
            },
            Preset::Documents => SynthConfig {
                rate_rps: 1.5,
                system_prompts: 0,
                system_prompt_tokens: 0,
                continue_share: 0.0,
                new_tokens_mean: 16_000.0,
                new_tokens_sigma: 0.7,
                output_tokens_mean: 150.0,
                ..chat
            },
            Preset::Bursty => SynthConfig {
                burstiness: 4.0,
                ..chat
            },
            Preset::HotPrompt => SynthConfig {
                rate_rps: 5.0,
                system_prompts: 1,
                system_prompt_tokens: 16_384,
                continue_share: 0.2,
                new_tokens_mean: 1_500.0,
                output_tokens_mean: 200.0,
                ..chat
            },
        }
    }
}

/// An unknown preset name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown preset `{0}` (expected chat, agent, documents, bursty or hot-prompt)")]
pub struct UnknownPreset(pub String);

impl FromStr for Preset {
    type Err = UnknownPreset;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Preset::ALL
            .into_iter()
            .find(|p| p.as_str() == s.to_ascii_lowercase())
            .ok_or_else(|| UnknownPreset(s.to_string()))
    }
}

/// A setting out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid synth config: {0}")]
pub struct SynthError(pub String);

impl SynthConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), SynthError> {
        let pos = [
            ("rate_rps", self.rate_rps),
            ("burstiness", self.burstiness),
            ("new_tokens_mean", self.new_tokens_mean),
            ("output_tokens_mean", self.output_tokens_mean),
        ];
        for (n, v) in pos {
            if !(v.is_finite() && v > 0.0) {
                return Err(SynthError(format!("{n} must be > 0, got {v}")));
            }
        }
        for (n, v) in [
            ("new_tokens_sigma", self.new_tokens_sigma),
            ("output_tokens_sigma", self.output_tokens_sigma),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(SynthError(format!("{n} must be >= 0, got {v}")));
            }
        }
        if !(0.0..=1.0).contains(&self.continue_share) {
            return Err(SynthError("continue_share must be in [0, 1]".into()));
        }
        if self.max_input_tokens <= self.system_prompt_tokens {
            return Err(SynthError(
                "max_input_tokens must exceed system_prompt_tokens".into(),
            ));
        }
        Ok(())
    }

    /// The records, lazily (memory: the active conversations only).
    pub fn generate(&self) -> Result<Synth, SynthError> {
        self.validate()?;
        let mut ids = 0u64;
        let per = self.system_prompt_tokens / TRACE_BLOCK_TOKENS;
        let prompts = (0..self.system_prompts)
            .map(|_| {
                (0..per)
                    .map(|_| {
                        ids += 1;
                        ids
                    })
                    .collect()
            })
            .collect();
        Ok(Synth {
            cfg: self.clone(),
            rng: StdRng::seed_from_u64(self.seed),
            t_ms: 0.0,
            made: 0,
            next_id: ids,
            prompts,
            active: VecDeque::new(),
        })
    }
}

/// A conversation's history: its tokens so far and the block ids of its
/// full blocks.
#[derive(Debug, Clone)]
struct Conversation {
    tokens: u32,
    blocks: Vec<u64>,
}

/// The generator: an iterator over records.
#[derive(Debug)]
pub struct Synth {
    cfg: SynthConfig,
    rng: StdRng,
    t_ms: f64,
    made: usize,
    next_id: u64,
    prompts: Vec<Vec<u64>>,
    active: VecDeque<Conversation>,
}

impl Synth {
    fn normal(&mut self) -> f64 {
        // Box–Muller.
        let u1: f64 = self.rng.gen_range(f64::MIN_POSITIVE..1.0);
        let u2: f64 = self.rng.gen();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Log-normal with the given mean and σ of the log.
    fn lognormal(&mut self, mean: f64, sigma: f64) -> f64 {
        let mu = mean.ln() - sigma * sigma / 2.0;
        (mu + sigma * self.normal()).exp()
    }

    /// Gamma with shape `k` and mean 1 (Marsaglia–Tsang; boosted for k < 1).
    fn gamma_unit_mean(&mut self, k: f64) -> f64 {
        let (shape, boost) = if k < 1.0 {
            let u: f64 = self.rng.gen_range(f64::MIN_POSITIVE..1.0);
            (k + 1.0, u.powf(1.0 / k))
        } else {
            (k, 1.0)
        };
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        // Accepts with probability > 0.95 per round; bounded anyway.
        for _ in 0..1000 {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u: f64 = self.rng.gen_range(f64::MIN_POSITIVE..1.0);
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v * boost / k;
            }
        }
        1.0
    }

    fn fresh(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

impl Iterator for Synth {
    type Item = TraceRecord;

    fn next(&mut self) -> Option<TraceRecord> {
        if self.made >= self.cfg.requests {
            return None;
        }
        let cfg = self.cfg.clone();
        if self.made > 0 {
            let k = 1.0 / (cfg.burstiness * cfg.burstiness);
            self.t_ms += self.gamma_unit_mean(k) * 1000.0 / cfg.rate_rps;
        }
        self.made += 1;
        let new = self
            .lognormal(cfg.new_tokens_mean, cfg.new_tokens_sigma)
            .clamp(1.0, (cfg.max_input_tokens / 2) as f64) as u32;
        let output = self
            .lognormal(cfg.output_tokens_mean, cfg.output_tokens_sigma)
            .clamp(1.0, 8192.0) as u32;
        let returning = !self.active.is_empty() && self.rng.gen_bool(cfg.continue_share);
        let mut conv = None;
        if returning {
            let i = self.rng.gen_range(0..self.active.len());
            let c = self.active.remove(i).expect("index in range");
            if c.tokens + new <= cfg.max_input_tokens {
                conv = Some(c);
            }
        }
        let conv = conv.unwrap_or_else(|| {
            let blocks = if self.prompts.is_empty() {
                Vec::new()
            } else {
                let i = self.rng.gen_range(0..self.prompts.len());
                self.prompts[i].clone()
            };
            Conversation {
                tokens: blocks.len() as u32 * TRACE_BLOCK_TOKENS,
                blocks,
            }
        });
        let input = (conv.tokens + new).min(cfg.max_input_tokens);
        let mut hash_ids = conv.blocks;
        hash_ids.truncate(input.div_ceil(TRACE_BLOCK_TOKENS) as usize);
        while (hash_ids.len() as u32) < input.div_ceil(TRACE_BLOCK_TOKENS) {
            let id = self.fresh();
            hash_ids.push(id);
        }
        // The next turn reuses every full block of this prompt.
        let full = (input / TRACE_BLOCK_TOKENS) as usize;
        self.active.push_back(Conversation {
            tokens: input + output,
            blocks: hash_ids[..full].to_vec(),
        });
        while self.active.len() > cfg.active_conversations.max(1) {
            self.active.pop_front();
        }
        Some(TraceRecord {
            timestamp: self.t_ms as u64,
            input_length: input,
            output_length: output,
            hash_ids,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(cfg: &SynthConfig) -> Vec<TraceRecord> {
        cfg.generate().unwrap().collect()
    }

    #[test]
    fn deterministic_well_formed_and_monotone() {
        for p in Preset::ALL {
            let cfg = SynthConfig {
                requests: 2_000,
                ..p.config()
            };
            let a = take(&cfg);
            assert_eq!(a, take(&cfg), "{p:?}: same seed, same trace");
            assert_eq!(a.len(), 2_000);
            for w in a.windows(2) {
                assert!(w[0].timestamp <= w[1].timestamp);
            }
            for r in &a {
                assert_eq!(
                    r.hash_ids.len() as u32,
                    r.input_length.div_ceil(TRACE_BLOCK_TOKENS)
                );
                assert!(r.input_length <= cfg.max_input_tokens && r.output_length >= 1);
            }
            // Arrival rate within 15% of the target.
            let span = a.last().unwrap().timestamp as f64 / 1000.0;
            let rate = (a.len() - 1) as f64 / span;
            assert!((rate / cfg.rate_rps - 1.0).abs() < 0.15, "{p:?}: {rate}");
        }
    }

    #[test]
    fn sharing_follows_the_settings() {
        // Share of prompt blocks seen before (an unbounded cache's hit ratio).
        let reuse = |cfg: &SynthConfig| {
            let mut seen = std::collections::HashSet::new();
            let (mut hit, mut all) = (0usize, 0usize);
            for r in take(cfg) {
                let run = r.hash_ids.iter().take_while(|h| seen.contains(*h)).count();
                hit += run;
                all += r.hash_ids.len();
                seen.extend(r.hash_ids.iter().copied());
            }
            hit as f64 / all as f64
        };
        let base = SynthConfig {
            requests: 3_000,
            ..Preset::Chat.config()
        };
        let none = reuse(&SynthConfig {
            continue_share: 0.0,
            system_prompts: 0,
            ..base.clone()
        });
        let some = reuse(&base);
        let more = reuse(&SynthConfig {
            continue_share: 0.9,
            ..base.clone()
        });
        assert_eq!(none, 0.0);
        assert!(some > 0.2 && more > some, "{none} {some} {more}");
    }

    #[test]
    fn burstiness_raises_gap_variance() {
        let cv = |b: f64| {
            let cfg = SynthConfig {
                requests: 5_000,
                burstiness: b,
                ..Preset::Chat.config()
            };
            let t: Vec<f64> = take(&cfg).iter().map(|r| r.timestamp as f64).collect();
            let gaps: Vec<f64> = t.windows(2).map(|w| w[1] - w[0]).collect();
            let m = gaps.iter().sum::<f64>() / gaps.len() as f64;
            let v = gaps.iter().map(|g| (g - m).powi(2)).sum::<f64>() / gaps.len() as f64;
            v.sqrt() / m
        };
        let (poisson, bursty) = (cv(1.0), cv(4.0));
        assert!((0.85..1.15).contains(&poisson), "{poisson}");
        assert!(bursty > 2.5, "{bursty}");
    }

    #[test]
    fn bad_settings_are_typed_errors() {
        let bad = SynthConfig {
            rate_rps: 0.0,
            ..Preset::Chat.config()
        };
        assert!(bad.generate().is_err());
        assert_eq!("agent".parse::<Preset>(), Ok(Preset::Agent));
        assert!("nope".parse::<Preset>().is_err());
    }
}
