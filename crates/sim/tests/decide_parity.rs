//! The live router and the simulator place a request with the same
//! `mooncake_conductor::policy::decide`: on the same cluster shape, policy
//! output and admission rule they accept, reject or refuse a bad placement
//! alike, and report the same `BadPlacement`.

use mooncake_conductor::policy::admission::{Admission, AdmissionMode};
use mooncake_conductor::policy::{
    BadPlacement, ClusterView, Decision, Fetch, Placement, Policy, RejectReason, RequestInfo, Slo,
};
use mooncake_router::cluster::{LiveCluster, LiveClusterConfig, RouteError};
use mooncake_sim::sim::{simulate, Observer, Outcome, OutcomeKind, SimConfig, SimError};
use mooncake_sim::trace::TraceRecord;
use std::convert::Infallible;

const PREFILL: usize = 2;
const DECODE: usize = 1;

/// Places every request where it is told to.
#[derive(Clone, Copy)]
struct Fixed(Placement);

impl Policy for Fixed {
    fn name(&self) -> &'static str {
        "fixed"
    }
    fn route(&mut self, _: &RequestInfo<'_>, _: &dyn ClusterView) -> Decision {
        Decision::Accept(self.0)
    }
}

fn fixed(prefill: usize, decode: usize, fetch_from: Option<usize>) -> Fixed {
    Fixed(Placement {
        prefill,
        decode,
        fetch: fetch_from.map(|from| Fetch {
            from,
            prefix_blocks: 1,
        }),
        predicted_ttft_s: f64::NAN,
        predicted_tbt_s: f64::NAN,
        reuse_limit_blocks: None,
    })
}

/// What became of the request, in terms both callers can report.
#[derive(Debug, PartialEq)]
enum Seen {
    Placed,
    Rejected(RejectReason),
    Bad(BadPlacement),
}

const INPUT: u32 = 2048;
const OUTPUT: u32 = 16;
const BLOCKS: [u64; 4] = [11, 12, 13, 14];

fn router(policy: Fixed, admission: Admission, slo: Slo) -> Seen {
    let cfg = LiveClusterConfig {
        admission,
        slo,
        ..LiveClusterConfig::default()
    };
    let mut c = LiveCluster::new(cfg, PREFILL, DECODE);
    let req = RequestInfo {
        id: 0,
        input_tokens: INPUT,
        output_tokens: OUTPUT,
        blocks: &BLOCKS,
    };
    let mut p = policy;
    match c.route(&mut p, &req, 0.0, &[]) {
        Ok(r) => {
            assert_eq!((r.prefill, r.decode), (policy.0.prefill, policy.0.decode));
            Seen::Placed
        }
        Err(RouteError::Rejected(r)) => Seen::Rejected(r),
        Err(RouteError::BadPlacement(b)) => Seen::Bad(b),
        Err(e) => panic!("unexpected router error {e}"),
    }
}

/// Keeps the one request's outcome.
struct Recorder(Option<OutcomeKind>);

impl Observer for Recorder {
    fn on_outcome(&mut self, o: &Outcome) {
        assert!(self.0.replace(o.kind).is_none(), "one outcome per request");
    }
}

fn simulator(policy: Fixed, admission: Admission, slo: Slo) -> Seen {
    let cfg = SimConfig {
        prefill: PREFILL,
        decode: DECODE,
        admission,
        slo,
        ..SimConfig::default()
    };
    let rec = TraceRecord {
        timestamp: 0,
        input_length: INPUT,
        output_length: OUTPUT,
        hash_ids: BLOCKS.to_vec(),
    };
    let trace = [Ok::<_, Infallible>(rec)];
    let mut seen = Recorder(None);
    match simulate(cfg, Box::new(policy), trace, &mut seen) {
        Ok(_) => match seen.0.expect("the request ended") {
            OutcomeKind::Completed { .. } => Seen::Placed,
            OutcomeKind::Rejected(r) => Seen::Rejected(r),
        },
        Err(SimError::BadPlacement { id, bad }) => {
            assert_eq!(id, 0);
            Seen::Bad(bad)
        }
        Err(e) => panic!("unexpected simulator error {e}"),
    }
}

/// Runs both and asserts they agree; returns the common answer.
fn both(policy: Fixed, admission: Admission, slo: Slo) -> Seen {
    let r = router(policy, admission, slo);
    let s = simulator(policy, admission, slo);
    assert_eq!(r, s, "router and simulator decided differently");
    r
}

fn slo_mode(threshold: f64) -> Admission {
    Admission {
        mode: AdmissionMode::Slo,
        threshold,
    }
}

#[test]
fn valid_placement_is_placed_by_both() {
    for (p, f) in [(0, None), (1, Some(0))] {
        assert_eq!(
            both(fixed(p, 0, f), Admission::default(), Slo::default()),
            Seen::Placed
        );
    }
}

#[test]
fn bad_placement_is_the_same_refusal_in_both() {
    for (p, d, f) in [
        (PREFILL, 0, None),
        (0, DECODE, None),
        (0, 0, Some(PREFILL + 3)),
    ] {
        let expected = Seen::Bad(BadPlacement {
            policy: "fixed",
            prefill: p,
            decode: d,
            fetch_from: f,
            prefill_instances: PREFILL,
            decode_instances: DECODE,
        });
        // Also when admission would reject the request anyway: a policy bug
        // is reported as one, never as overload.
        let strict = Slo {
            ttft_s: 1e-9,
            tbt_s: 1e-9,
        };
        assert_eq!(
            both(fixed(p, d, f), Admission::default(), Slo::default()),
            expected
        );
        assert_eq!(both(fixed(p, d, f), slo_mode(1.0), strict), expected);
    }
}

#[test]
fn admission_rejects_alike() {
    let strict_ttft = Slo {
        ttft_s: 1e-9,
        ..Slo::default()
    };
    assert_eq!(
        both(fixed(0, 0, None), slo_mode(1.0), strict_ttft),
        Seen::Rejected(RejectReason::TtftSlo)
    );
    assert_eq!(
        both(fixed(1, 0, None), slo_mode(1.0), Slo::default()),
        Seen::Placed
    );
}
