//! Scoring a drill run, per branch: a pure function of each step's target,
//! weight and response (docs/PLAYBOOKS.md, "Scoring").
//!
//! - answered within its target T: 100;
//! - later but by 2T: from 100 down to 50, linearly;
//! - after 2T: 25; never answered by the drill's end: 0;
//! - a roll call scores the share of people confirmed within T;
//! - steps that never became active are left out;
//! - the score is the weighted mean, rounded to one decimal; the run passes
//!   when the score reaches the pass mark and every critical step was answered
//!   by 2T (a roll call: everyone confirmed by 2T).

use serde::{Deserialize, Serialize};

/// What one step of a branch run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepScore {
    pub id: String,
    pub target_seconds: f64,
    pub weight: f64,
    pub critical: bool,
    /// The step started in the run; inactive steps are left out of the score.
    pub active: bool,
    /// First acknowledgement or completion after notification; `None`: never.
    pub response_seconds: Option<f64>,
    /// Roll call: each person's confirmation time after notification (`None`: never).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roll_call: Vec<(String, Option<f64>)>,
    /// 0–100, filled in by [`score`]; `None` for an inactive step.
    pub credit: Option<f64>,
    pub by: Option<String>,
}

/// The credit of one response against a target.
pub fn credit(target: f64, response: Option<f64>) -> f64 {
    match response {
        None => 0.0,
        Some(r) if r <= target => 100.0,
        Some(r) if r <= 2.0 * target => 100.0 - 50.0 * (r - target) / target,
        Some(_) => 25.0,
    }
}

/// The outcome of a branch run.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// `None` when no step was active (nothing to score).
    pub score: Option<f64>,
    pub passed: bool,
}

/// Fills in each step's credit and returns the branch run's score.
pub fn score(steps: &mut [StepScore], pass_score: f64) -> Outcome {
    let mut weighted = 0.0;
    let mut weights = 0.0;
    let mut criticals_ok = true;
    for s in steps.iter_mut() {
        if !s.active {
            s.credit = None;
            continue;
        }
        let t = s.target_seconds.max(0.001);
        let (c, by_2t) = if s.roll_call.is_empty() {
            (
                credit(t, s.response_seconds),
                s.response_seconds.is_some_and(|r| r <= 2.0 * t),
            )
        } else {
            let total = s.roll_call.len() as f64;
            let within = s
                .roll_call
                .iter()
                .filter(|(_, r)| r.is_some_and(|r| r <= t))
                .count() as f64;
            let all_by_2t = s
                .roll_call
                .iter()
                .all(|(_, r)| r.is_some_and(|r| r <= 2.0 * t));
            (100.0 * within / total, all_by_2t)
        };
        s.credit = Some(round1(c));
        weighted += c * s.weight;
        weights += s.weight;
        if s.critical && !by_2t {
            criticals_ok = false;
        }
    }
    if weights <= 0.0 {
        return Outcome {
            score: None,
            passed: false,
        };
    }
    let score = round1(weighted / weights);
    Outcome {
        score: Some(score),
        passed: score >= pass_score && criticals_ok,
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(target: f64, response: Option<f64>) -> StepScore {
        StepScore {
            id: "s".into(),
            target_seconds: target,
            weight: 1.0,
            critical: false,
            active: true,
            response_seconds: response,
            roll_call: Vec::new(),
            credit: None,
            by: None,
        }
    }

    #[test]
    fn credit_at_the_edges() {
        assert_eq!(credit(600.0, Some(0.0)), 100.0);
        assert_eq!(credit(600.0, Some(600.0)), 100.0, "exactly T");
        assert_eq!(credit(600.0, Some(900.0)), 75.0, "halfway to 2T");
        assert_eq!(credit(600.0, Some(1200.0)), 50.0, "exactly 2T");
        assert_eq!(credit(600.0, Some(1200.1)), 25.0, "just after 2T");
        assert_eq!(credit(600.0, None), 0.0, "never");
    }

    #[test]
    fn weighted_mean_rounded_with_inactive_steps_left_out() {
        let mut steps = vec![
            step(600.0, Some(300.0)),  // 100
            step(600.0, Some(1000.0)), // 100 - 50*400/600 = 66.666…
            StepScore {
                weight: 2.0,
                ..step(300.0, None) // 0, twice
            },
            StepScore {
                active: false,
                ..step(60.0, None)
            },
        ];
        let o = score(&mut steps, 80.0);
        // (100 + 66.667 + 0*2) / 4 = 41.666… → 41.7
        assert_eq!(o.score, Some(41.7));
        assert!(!o.passed);
        assert_eq!(steps[1].credit, Some(66.7));
        assert_eq!(steps[3].credit, None);
    }

    #[test]
    fn zero_weight_and_all_inactive() {
        let mut steps = vec![
            StepScore {
                weight: 0.0,
                ..step(60.0, None)
            },
            step(60.0, Some(10.0)),
        ];
        assert_eq!(
            score(&mut steps, 80.0).score,
            Some(100.0),
            "a zero weight counts for nothing"
        );
        let mut none = vec![StepScore {
            active: false,
            ..step(60.0, Some(1.0))
        }];
        assert_eq!(
            score(&mut none, 80.0),
            Outcome {
                score: None,
                passed: false
            }
        );
    }

    #[test]
    fn a_late_critical_step_fails_a_run_whose_mean_passes() {
        let mut steps = vec![
            StepScore {
                critical: true,
                ..step(60.0, Some(130.0)) // after 2T: 25
            },
            step(60.0, Some(1.0)),
            step(60.0, Some(1.0)),
            step(60.0, Some(1.0)),
            step(60.0, Some(1.0)),
            step(60.0, Some(1.0)),
            step(60.0, Some(1.0)),
            step(60.0, Some(1.0)),
            step(60.0, Some(1.0)),
            step(60.0, Some(1.0)),
        ];
        let o = score(&mut steps, 80.0);
        assert_eq!(o.score, Some(92.5));
        assert!(!o.passed, "the critical step was answered after 2T");
    }

    #[test]
    fn a_roll_call_scores_the_share_confirmed_within_target() {
        let mut steps = vec![StepScore {
            critical: true,
            roll_call: vec![
                ("a".into(), Some(30.0)),
                ("b".into(), Some(90.0)),
                ("c".into(), Some(150.0)),
                ("d".into(), None),
            ],
            ..step(100.0, None)
        }];
        let o = score(&mut steps, 20.0);
        assert_eq!(o.score, Some(50.0), "two of four within T");
        assert!(
            !o.passed,
            "d never confirmed: a critical roll call is not complete by 2T"
        );
    }
}
