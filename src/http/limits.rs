//! How fast a client may ask, and what refusals cost.
//!
//! - Accepted requests are limited per API token (its `rate`; ingest tokens
//!   default to [`INGEST_RATE`]), per client address without tokens
//!   (loopback only) at the ingest rate, and per address for one-click
//!   incident grants at `limits.requests_per_second`.
//! - Refused requests (401, 403, a 404 for another branch's incident) draw
//!   on their client address's own bucket (`limits.denied_per_second`,
//!   `limits.denied_burst`). While it is empty, every request from that
//!   address is answered 429 before anything is decided, so guessing tokens
//!   costs the daemon almost nothing.
//! - Refusals are counted in `branchguard_requests_denied_total{reason}` and
//!   reach the audit log as at most one summary line a minute per client.
//!
//! **Invariant:** a refused request never writes an audit row of its own.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

use crate::clock;
use crate::config::{INGEST_RATE, Limits};

/// A keyed limiter and the (per second, burst) it was built for.
type Built = ((u32, u32), Arc<DefaultKeyedRateLimiter<IpAddr>>);

/// The per-client rate limiters of accepted requests.
pub struct RateLimit {
    tokens: Mutex<HashMap<String, (u32, Arc<DefaultDirectRateLimiter>)>>,
    local: DefaultKeyedRateLimiter<IpAddr>,
    /// Built for (per second, burst); built again when a reload changes them.
    grants: Mutex<Built>,
}

fn quota(per_second: u32, burst: u32) -> Quota {
    let ps = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let b = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(ps).allow_burst(b)
}

impl RateLimit {
    pub fn new(limits: &Limits) -> RateLimit {
        RateLimit {
            tokens: Mutex::new(HashMap::new()),
            local: DefaultKeyedRateLimiter::keyed(quota(
                INGEST_RATE,
                INGEST_RATE.saturating_mul(2),
            )),
            grants: Mutex::new((
                (limits.requests_per_second, limits.burst),
                Arc::new(DefaultKeyedRateLimiter::keyed(quota(
                    limits.requests_per_second,
                    limits.burst,
                ))),
            )),
        }
    }

    /// Whether a token may send one more request now (`rate` per second,
    /// bursts of twice that). A changed rate takes effect at once.
    pub fn token(&self, name: &str, rate: u32) -> bool {
        let limiter = {
            let mut map = match self.tokens.lock() {
                Ok(m) => m,
                Err(p) => p.into_inner(),
            };
            match map.get(name) {
                Some((r, l)) if *r == rate => Arc::clone(l),
                _ => {
                    let l = Arc::new(DefaultDirectRateLimiter::direct(quota(
                        rate,
                        rate.saturating_mul(2),
                    )));
                    map.insert(name.to_string(), (rate, Arc::clone(&l)));
                    l
                }
            }
        };
        limiter.check().is_ok()
    }

    /// Forgets addresses whose buckets are full again: the keyed limiters
    /// would otherwise keep every address ever seen.
    pub fn prune(&self) {
        self.local.retain_recent();
        self.local.shrink_to_fit();
        let grants = match self.grants.lock() {
            Ok(g) => Arc::clone(&g.1),
            Err(p) => Arc::clone(&p.into_inner().1),
        };
        grants.retain_recent();
        grants.shrink_to_fit();
    }

    /// Without tokens (loopback only): per client address, at the ingest rate.
    pub fn local(&self, ip: IpAddr) -> bool {
        self.local.check_key(&ip).is_ok()
    }

    /// A one-click incident grant: per client address, at the rate of
    /// people's tokens (`limits.requests_per_second`, `limits.burst`).
    pub fn grant(&self, ip: IpAddr, limits: &Limits) -> bool {
        let want = (limits.requests_per_second, limits.burst);
        let limiter = {
            let mut g = match self.grants.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            if g.0 != want {
                *g = (
                    want,
                    Arc::new(DefaultKeyedRateLimiter::keyed(quota(want.0, want.1))),
                );
            }
            Arc::clone(&g.1)
        };
        limiter.check_key(&ip).is_ok()
    }
}

/// One client's refusals: its bucket, and what is not yet in the audit log.
#[derive(Debug)]
struct Client {
    tokens: f64,
    refilled: Instant,
    pending: BTreeMap<&'static str, u64>,
    /// The first refusal since the last summary, as an example.
    example: Option<String>,
    last_summary: Option<Instant>,
}

/// Refusals per client address.
pub struct Denials {
    clients: Mutex<HashMap<IpAddr, Client>>,
}

/// More addresses than this are tracked as one ("other clients"): a flood
/// from many addresses cannot grow the table without bound.
const MAX_CLIENTS: usize = 50_000;
/// The address a flood's overflow is counted under.
const OVERFLOW: IpAddr = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
/// At most one audit line per client per this.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// What to answer a refused request with.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The refusal as decided (401, 403, 404).
    Refuse,
    /// 429: the address has refused requests to spare no more.
    Limited,
}

impl Default for Denials {
    fn default() -> Self {
        Denials {
            clients: Mutex::new(HashMap::new()),
        }
    }
}

impl Denials {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Client>> {
        match self.clients.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        }
    }

    fn refill(c: &mut Client, now: Instant, limits: &Limits) {
        let rate = f64::from(limits.denied_per_second.max(1));
        let burst = f64::from(limits.denied_burst.max(1));
        let dt = now.saturating_duration_since(c.refilled).as_secs_f64();
        c.tokens = (c.tokens + dt * rate).min(burst);
        c.refilled = now;
    }

    /// Whether `ip` is out of refusals: answer 429 without deciding anything.
    /// An address not in the table has all its refusals left: a flood from
    /// many addresses (counted together once the table is full) never turns
    /// away a client it has not seen refused.
    pub fn exhausted(&self, ip: IpAddr, limits: &Limits) -> bool {
        let now = clock::instant();
        let mut map = self.lock();
        match map.get_mut(&ip) {
            Some(c) => {
                Self::refill(c, now, limits);
                c.tokens < 1.0
            }
            None => false,
        }
    }

    /// Records one refusal of `ip` (`reason` as the metric counts it,
    /// `detail` for the audit summary). Returns what to answer, and an audit
    /// line when this client's summary is due (its first refusal in a minute).
    pub fn record(
        &self,
        ip: IpAddr,
        reason: &'static str,
        detail: &str,
        limits: &Limits,
    ) -> (Verdict, Option<String>) {
        let now = clock::instant();
        let mut map = self.lock();
        let key = if map.contains_key(&ip) || map.len() < MAX_CLIENTS {
            ip
        } else {
            OVERFLOW
        };
        let c = map.entry(key).or_insert_with(|| Client {
            tokens: f64::from(limits.denied_burst.max(1)),
            refilled: now,
            pending: BTreeMap::new(),
            example: None,
            last_summary: None,
        });
        Self::refill(c, now, limits);
        let verdict = if c.tokens >= 1.0 {
            c.tokens -= 1.0;
            Verdict::Refuse
        } else {
            Verdict::Limited
        };
        let counted = if verdict == Verdict::Limited {
            "rate_limited"
        } else {
            reason
        };
        crate::metrics::request_denied(counted);
        *c.pending.entry(counted).or_default() += 1;
        if c.example.is_none() {
            c.example = Some(crate::diag::clip_quotes(detail));
        }
        let due = c
            .last_summary
            .is_none_or(|t| now.saturating_duration_since(t) >= SUMMARY_EVERY);
        let line = due.then(|| {
            c.last_summary = Some(now);
            summary(key, c)
        });
        (verdict, line)
    }

    /// The summaries now due (clients refused since their last one, a minute
    /// ago or more), and forgets clients with nothing pending and a full bucket.
    pub fn due(&self, limits: &Limits) -> Vec<String> {
        let now = clock::instant();
        let mut map = self.lock();
        let mut out = Vec::new();
        for (ip, c) in map.iter_mut() {
            Self::refill(c, now, limits);
            let due = c
                .last_summary
                .is_none_or(|t| now.saturating_duration_since(t) >= SUMMARY_EVERY);
            if due && !c.pending.is_empty() {
                c.last_summary = Some(now);
                out.push(summary(*ip, c));
            }
        }
        let burst = f64::from(limits.denied_burst.max(1));
        map.retain(|_, c| {
            !c.pending.is_empty()
                || c.tokens < burst
                || c.last_summary
                    .is_some_and(|t| now.saturating_duration_since(t) < SUMMARY_EVERY)
        });
        out
    }
}

/// One audit line for a client's refusals since its last summary.
fn summary(ip: IpAddr, c: &mut Client) -> String {
    let total: u64 = c.pending.values().sum();
    let by: Vec<String> = c.pending.iter().map(|(r, n)| format!("{r} {n}")).collect();
    let who = if ip == OVERFLOW {
        "other clients (too many addresses to tell apart)".to_string()
    } else {
        format!("client {ip}")
    };
    let line = format!(
        "{who}: {total} request(s) refused ({}); first: {}",
        by.join(", "),
        c.example.as_deref().unwrap_or("-")
    );
    c.pending.clear();
    c.example = None;
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_drain_a_bucket_then_get_429_and_one_summary_a_minute() {
        let limits = Limits {
            denied_per_second: 1,
            denied_burst: 3,
            ..Limits::default()
        };
        let d = Denials::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(!d.exhausted(ip, &limits), "a new client");
        let mut lines = Vec::new();
        let mut verdicts = Vec::new();
        for i in 0..10 {
            let (v, line) = d.record(ip, "unauthorized", &format!("GET /x #{i}"), &limits);
            verdicts.push(v);
            lines.extend(line);
        }
        assert_eq!(
            verdicts.iter().filter(|v| **v == Verdict::Refuse).count(),
            3
        );
        assert!(d.exhausted(ip, &limits));
        assert_eq!(lines.len(), 1, "one line now: {lines:?}");
        assert!(
            lines[0].contains("client 192.0.2.7: 1 request(s)"),
            "{}",
            lines[0]
        );
        assert!(d.due(&limits).is_empty(), "the next summary waits a minute");
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert!(!d.exhausted(other, &limits), "another client is not held");
    }
}
