//! One-click links: HMAC-SHA256-signed, expiring tokens that name an incident,
//! a step, a person and an action. The secret is generated once into the data
//! directory unless `BRANCHGUARD_LINK_SECRET` gives one.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::engine::LinkAction;

pub const SECRET_ENV: &str = "BRANCHGUARD_LINK_SECRET";

/// What a link lets its holder do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(rename = "i")]
    pub incident: i64,
    #[serde(rename = "s")]
    pub step: String,
    #[serde(rename = "p")]
    pub person: String,
    #[serde(rename = "a")]
    pub action: LinkAction,
    /// Expiry, in seconds since the epoch.
    #[serde(rename = "e")]
    pub expires: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("this link is not a branchguard link")]
    Malformed,
    #[error("this link's signature is not valid")]
    Forged,
    /// Genuine but out of date: what it was for is still known, so the page
    /// can say how to answer another way.
    #[error("this link expired at {0}")]
    Expired(DateTime<Utc>, Box<Claims>),
    #[error("this link to the incident expired at {0}")]
    GrantExpired(DateTime<Utc>),
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read or write the link secret {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot generate a random secret: {0}")]
    Random(String),
    #[error("{0} is set but shorter than 32 characters")]
    TooShort(&'static str),
    #[error(
        "no link secret at {0} (nor in BRANCHGUARD_LINK_SECRET): the nodes of an active/standby group sign one-click links with one secret, so it is given, never made by each node: copy link-secret from the first node, or set the variable on every node (see docs/DEPLOY.md)"
    )]
    NotGiven(String),
}

/// The signing key for links.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn from_bytes(b: &[u8]) -> Secret {
        Secret(b.to_vec())
    }

    /// From the environment, else `data_dir/link-secret`, which must exist:
    /// a node of an active/standby group, whose links another node checks.
    pub fn load_given(data_dir: &Path) -> Result<Secret, SecretError> {
        let path = data_dir.join("link-secret");
        if std::env::var_os(SECRET_ENV).is_none() && !path.exists() {
            return Err(SecretError::NotGiven(path.display().to_string()));
        }
        Secret::load(data_dir)
    }

    /// From the environment, else `data_dir/link-secret`, created on first use.
    pub fn load(data_dir: &Path) -> Result<Secret, SecretError> {
        if let Ok(s) = std::env::var(SECRET_ENV) {
            if s.len() < 32 {
                return Err(SecretError::TooShort(SECRET_ENV));
            }
            return Ok(Secret(s.into_bytes()));
        }
        let path = data_dir.join("link-secret");
        let io = |source| SecretError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(hexed) => {
                if let Ok(b) = hex::decode(hexed.trim())
                    && b.len() >= 32
                {
                    return Ok(Secret(b));
                }
                Err(io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not 32+ hex-encoded bytes",
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut b = [0u8; 32];
                getrandom::fill(&mut b).map_err(|e| SecretError::Random(e.to_string()))?;
                crate::private::create_dir(data_dir).map_err(io)?;
                crate::private::write_new(&path, &hex::encode(b)).map_err(io)?;
                tracing::warn!(
                    "created a new link secret in {}: links in emails sent before it no longer work",
                    path.display()
                );
                Ok(Secret(b.to_vec()))
            }
            Err(e) => Err(io(e)),
        }
    }

    fn mac(&self, data: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        let mut m =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
        m.update(data);
        m
    }

    pub fn sign(&self, c: &Claims) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(c).unwrap_or_default());
        let sig = URL_SAFE_NO_PAD.encode(self.mac(payload.as_bytes()).finalize().into_bytes());
        format!("{payload}.{sig}")
    }

    /// The key of a person's shift calendar link: a phone subscribes to it
    /// without a token. It does not expire (a calendar app keeps the URL);
    /// replacing the link secret revokes every one.
    pub fn calendar_key(&self, person: &str) -> String {
        URL_SAFE_NO_PAD.encode(
            self.mac(format!("calendar.{person}").as_bytes())
                .finalize()
                .into_bytes(),
        )
    }

    /// Whether `key` is the calendar key of `person` (compared in constant time).
    pub fn calendar_key_holds(&self, person: &str, key: &str) -> bool {
        URL_SAFE_NO_PAD.decode(key).is_ok_and(|sig| {
            self.mac(format!("calendar.{person}").as_bytes())
                .verify_slice(&sig)
                .is_ok()
        })
    }

    /// A read-only grant for one incident's page, valid until `expires`:
    /// what the `Incident:` line of a message carries. Signed apart from
    /// action links (a grant is never an action, nor an action a grant).
    pub fn sign_grant(&self, incident: i64, expires: DateTime<Utc>) -> String {
        let payload = URL_SAFE_NO_PAD
            .encode(serde_json::json!({ "g": incident, "e": expires.timestamp() }).to_string());
        let sig = URL_SAFE_NO_PAD.encode(
            self.mac(format!("grant.{payload}").as_bytes())
                .finalize()
                .into_bytes(),
        );
        format!("{payload}.{sig}")
    }

    /// The incident a grant is for, if it is genuine and in date.
    pub fn verify_grant(&self, token: &str, now: DateTime<Utc>) -> Result<i64, LinkError> {
        let (payload, sig) = token.split_once('.').ok_or(LinkError::Malformed)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| LinkError::Malformed)?;
        self.mac(format!("grant.{payload}").as_bytes())
            .verify_slice(&sig)
            .map_err(|_| LinkError::Forged)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| LinkError::Malformed)?;
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|_| LinkError::Malformed)?;
        let (Some(incident), Some(e)) = (v["g"].as_i64(), v["e"].as_i64()) else {
            return Err(LinkError::Malformed);
        };
        let expires = DateTime::from_timestamp(e, 0).unwrap_or(DateTime::UNIX_EPOCH);
        if expires <= now {
            return Err(LinkError::GrantExpired(expires));
        }
        Ok(incident)
    }

    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Claims, LinkError> {
        let (payload, sig) = token.split_once('.').ok_or(LinkError::Malformed)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| LinkError::Malformed)?;
        self.mac(payload.as_bytes())
            .verify_slice(&sig)
            .map_err(|_| LinkError::Forged)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| LinkError::Malformed)?;
        let c: Claims = serde_json::from_slice(&bytes).map_err(|_| LinkError::Malformed)?;
        let expires = DateTime::from_timestamp(c.expires, 0).unwrap_or(DateTime::UNIX_EPOCH);
        if expires <= now {
            return Err(LinkError::Expired(expires, Box::new(c)));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(expires: i64) -> Claims {
        Claims {
            incident: 7,
            step: "roll-call".into(),
            person: "li.wei".into(),
            action: LinkAction::Safe,
            expires,
        }
    }

    #[test]
    fn round_trip_forgery_and_expiry() {
        let now = DateTime::parse_from_rfc3339("2026-11-24T09:00:00Z")
            .unwrap()
            .to_utc();
        let s = Secret::from_bytes(&[7u8; 32]);
        let t = s.sign(&claims(now.timestamp() + 60));
        assert_eq!(s.verify(&t, now), Ok(claims(now.timestamp() + 60)));
        assert_eq!(
            Secret::from_bytes(&[8u8; 32]).verify(&t, now),
            Err(LinkError::Forged)
        );
        // Changing the claims (another person) breaks the signature.
        let other = Secret::from_bytes(&[7u8; 32]).sign(&Claims {
            person: "x".into(),
            ..claims(now.timestamp() + 60)
        });
        let forged = format!(
            "{}.{}",
            other.split_once('.').unwrap().0,
            t.split_once('.').unwrap().1
        );
        assert_eq!(s.verify(&forged, now), Err(LinkError::Forged));
        assert!(matches!(
            s.verify(&s.sign(&claims(now.timestamp() - 1)), now),
            Err(LinkError::Expired(..))
        ));
        assert_eq!(s.verify("garbage", now), Err(LinkError::Malformed));
    }

    #[test]
    fn a_grant_reads_one_incident_and_is_never_an_action_link() {
        let now = DateTime::parse_from_rfc3339("2026-11-24T09:00:00Z")
            .unwrap()
            .to_utc();
        let s = Secret::from_bytes(&[7u8; 32]);
        let g = s.sign_grant(12, now + chrono::Duration::days(7));
        assert_eq!(s.verify_grant(&g, now), Ok(12));
        assert!(matches!(
            s.verify_grant(&g, now + chrono::Duration::days(8)),
            Err(LinkError::GrantExpired(_))
        ));
        assert_eq!(
            s.verify(&g, now),
            Err(LinkError::Forged),
            "not an action link"
        );
        let action = s.sign(&claims(now.timestamp() + 60));
        assert_eq!(s.verify_grant(&action, now), Err(LinkError::Forged));
        assert_eq!(
            Secret::from_bytes(&[8u8; 32]).verify_grant(&g, now),
            Err(LinkError::Forged)
        );
    }

    #[test]
    fn secret_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = Secret::load(dir.path()).unwrap();
        let b = Secret::load(dir.path()).unwrap();
        assert_eq!(a.0, b.0);
        assert_eq!(a.0.len(), 32);
    }
}
