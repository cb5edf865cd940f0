//! The uniform-stay forecast of a decode instance's memory, shared by every
//! [`super::ClusterView`] that tracks requests one by one (the simulator's
//! cluster and the live router).
//!
//! The arXiv report's system-level prediction: every request holds its
//! reservation for the same time `hold_s` (the recent mean decode time) from
//! the moment it joins. A request still running after `hold_s / 2` is given
//! `hold_s / 2` more, its expected residual life: decode times are
//! long-tailed, so an old request is not about to leave. Requests in prefill
//! or transfer join at their predicted arrival.

/// Start of a running request's predicted stay, given when it joined.
pub fn running_stay_start(joined: f64, now: f64, hold_s: f64) -> f64 {
    joined.max(now - hold_s / 2.0)
}

/// The most tokens held at any time in `[from, to]` by stays that start at
/// the given times, hold the given tokens and last `hold_s` each. A stay
/// counts at `t` when `start <= t < start + hold_s`.
pub fn peak_tokens(
    stays: impl IntoIterator<Item = (f64, u64)>,
    from: f64,
    to: f64,
    hold_s: f64,
) -> u64 {
    let mut ev: Vec<(f64, i64)> = Vec::new();
    for (start, tokens) in stays {
        let tokens = tokens as i64;
        ev.push((start, tokens));
        ev.push((start + hold_s, -tokens));
    }
    // Leaving before joining at equal times.
    ev.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut it = ev.into_iter().peekable();
    let mut level = 0i64;
    while let Some(&(t, delta)) = it.peek() {
        if t > from {
            break;
        }
        level += delta;
        it.next();
    }
    let mut peak = level;
    for (t, delta) in it {
        if t > to {
            break;
        }
        level += delta;
        peak = peak.max(level);
    }
    peak.max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_at_an_instant_and_peak_over_a_window() {
        // Two stays of 10 s: [0, 10) with 5 tokens and [4, 14) with 7.
        let stays = [(0.0, 5), (4.0, 7)];
        assert_eq!(peak_tokens(stays, 2.0, 2.0, 10.0), 5);
        assert_eq!(peak_tokens(stays, 4.0, 4.0, 10.0), 12);
        assert_eq!(
            peak_tokens(stays, 10.0, 10.0, 10.0),
            7,
            "the first has left"
        );
        assert_eq!(peak_tokens(stays, 0.0, 20.0, 10.0), 12);
        assert_eq!(peak_tokens(stays, 14.0, 20.0, 10.0), 0);
        assert_eq!(peak_tokens([], 0.0, 1.0, 10.0), 0);
    }

    #[test]
    fn an_old_request_gets_half_a_stay_more() {
        assert_eq!(running_stay_start(8.0, 10.0, 10.0), 8.0);
        assert_eq!(running_stay_start(1.0, 10.0, 10.0), 5.0);
    }
}
