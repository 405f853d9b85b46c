//! Ranking a batch test, pure: which candidates may be switched to, in which order, and when the
//! probes still running can no longer change the winner.

/// A probe's verdict: latency in ms, or why it failed.
pub type ProbeResult = Result<u64, String>;

/// One candidate's batch-test state.
#[derive(Debug, Clone, Copy)]
pub struct Trial<'a> {
    /// The candidate's config.
    pub config_id: i64,
    /// When its probe started (monotonic ms), once it did.
    pub started_ms: Option<u64>,
    /// Its verdict, once it arrived.
    pub result: Option<&'a ProbeResult>,
}

/// Indices of the candidates that passed, best first: by latency, then config id. A candidate
/// that failed, or whose probe had not answered, is never in the list.
pub fn rank(trials: &[Trial<'_>]) -> Vec<usize> {
    let mut passed: Vec<(u64, i64, usize)> = trials
        .iter()
        .enumerate()
        .filter_map(|(index, t)| match t.result {
            Some(Ok(latency)) => Some((*latency, t.config_id, index)),
            _ => None,
        })
        .collect();
    passed.sort_unstable();
    passed.into_iter().map(|(_, _, index)| index).collect()
}

/// True when the probes still running cannot beat the best answer: every one of them has
/// already run longer than the best latency, so its own latency will be larger. A dead candidate
/// then costs nothing, because the switch need not wait for its timeout.
pub fn decided(trials: &[Trial<'_>], now_ms: u64) -> bool {
    let best = trials.iter().filter_map(|t| t.result?.as_ref().ok()).min();
    let Some(best) = best else {
        return false;
    };
    trials.iter().filter(|t| t.result.is_none()).all(|t| {
        t.started_ms
            .is_some_and(|s| now_ms.saturating_sub(s) > *best)
    })
}

/// The moment [`decided`] turns true if no further answer arrives: one ms after the slowest
/// running probe has run as long as the best latency. None while nothing passed or a candidate
/// has not started.
pub fn decision_due(trials: &[Trial<'_>]) -> Option<u64> {
    let best = trials
        .iter()
        .filter_map(|t| t.result?.as_ref().ok())
        .min()?;
    trials
        .iter()
        .filter(|t| t.result.is_none())
        .map(|t| t.started_ms.map(|s| s + best + 1))
        .try_fold(None::<u64>, |latest, due| {
            let due = due?;
            Some(Some(latest.map_or(due, |l| l.max(due))))
        })
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64, seeded, for random batches.
    fn next(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    #[test]
    fn failed_and_unanswered_candidates_are_never_ranked() {
        let (ok_fast, ok_slow, failed) = (Ok(5), Ok(9), Err("timeout".to_string()));
        let trials = [
            Trial {
                config_id: 3,
                started_ms: Some(0),
                result: Some(&ok_slow),
            },
            Trial {
                config_id: 1,
                started_ms: Some(0),
                result: Some(&failed),
            },
            Trial {
                config_id: 2,
                started_ms: Some(0),
                result: None,
            },
            Trial {
                config_id: 4,
                started_ms: Some(0),
                result: Some(&ok_fast),
            },
            Trial {
                config_id: 0,
                started_ms: Some(0),
                result: Some(&ok_fast),
            },
        ];
        assert_eq!(rank(&trials), [4, 3, 0]);
    }

    /// Random batches with hidden true outcomes, all probes started within a window: at every
    /// moment the batch is declared decided, the ranking's winner is the true best of the whole
    /// batch, and it is a candidate that passed.
    #[test]
    fn a_decided_batch_never_misses_a_better_candidate() {
        for seed in 0..5_000u64 {
            let mut rng = seed;
            let n = 1 + (next(&mut rng) % 12) as usize;
            // (started, true latency or failure at this time)
            let truth: Vec<(u64, Result<u64, u64>)> = (0..n)
                .map(|_| {
                    let started = next(&mut rng) % 50;
                    let took = 1 + next(&mut rng) % 400;
                    let outcome = if next(&mut rng).is_multiple_of(3) {
                        Err(took)
                    } else {
                        Ok(took)
                    };
                    (started, outcome)
                })
                .collect();
            let true_best = truth
                .iter()
                .enumerate()
                .filter_map(|(i, (_, o))| o.ok().map(|l| (l, i as i64)))
                .min()
                .map(|(_, id)| id);
            for now in 0..=500u64 {
                let results: Vec<Option<ProbeResult>> = truth
                    .iter()
                    .map(|(s, o)| match o {
                        Ok(l) if s + l <= now => Some(Ok(*l)),
                        Err(l) if s + l <= now => Some(Err("dead".into())),
                        _ => None,
                    })
                    .collect();
                let trials: Vec<Trial> = truth
                    .iter()
                    .zip(&results)
                    .enumerate()
                    .map(|(i, ((s, _), r))| Trial {
                        config_id: i as i64,
                        started_ms: (*s <= now).then_some(*s),
                        result: r.as_ref(),
                    })
                    .collect();
                let all_in = results.iter().all(Option::is_some);
                if let Some(due) = decision_due(&trials) {
                    assert!(
                        decided(&trials, due),
                        "seed {seed}: decided at its due time"
                    );
                    assert!(!decided(&trials, due - 1), "seed {seed}: and not before");
                }
                if decided(&trials, now) || all_in {
                    let winner = rank(&trials).first().map(|i| trials[*i].config_id);
                    assert_eq!(winner, true_best, "seed {seed} at {now} ms: {truth:?}");
                    break;
                }
            }
        }
    }
}
