//! Standard Webhooks signatures (standardwebhooks.com): HMAC-SHA256 over
//! `{webhook-id}.{webhook-timestamp}.{body}`, base64, sent as `v1,<sig>` in
//! `webhook-signature` (several, space-separated, during secret rotation).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;

/// How far a timestamp may be from now, either way.
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// A `whsec_…` signing secret. Its bytes never print.
#[derive(Clone)]
pub struct SigningSecret(SecretSlice<u8>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret([REDACTED])")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a Unix time in seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is more than 5 minutes from now")]
    StaleTimestamp,
    #[error("no signature matches")]
    Mismatch,
}

impl SigningSecret {
    /// Parses `whsec_<base64>`; the error says what is wrong (never the secret).
    pub fn parse(text: &str) -> Result<Self, String> {
        let encoded = text
            .strip_prefix("whsec_")
            .ok_or_else(|| "must start with whsec_".to_owned())?;
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|_| "is not base64 after whsec_".to_owned())?;
        if bytes.len() < 16 {
            return Err("must hold at least 16 bytes of key".to_owned());
        }
        Ok(Self(SecretSlice::from(bytes)))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC takes a key of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.expose_secret())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` value for a message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(id, timestamp, body).finalize().into_bytes();
        format!("v1,{}", STANDARD.encode(tag))
    }

    /// Verifies headers against the body at `now` (Unix seconds): the
    /// timestamp within tolerance and any `v1` signature matching, compared
    /// in constant time.
    pub fn verify(
        &self,
        id: Option<&str>,
        timestamp: Option<&str>,
        signatures: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        let id = id.ok_or(SignatureError::MissingHeader("webhook-id"))?;
        let timestamp = timestamp.ok_or(SignatureError::MissingHeader("webhook-timestamp"))?;
        let signatures = signatures.ok_or(SignatureError::MissingHeader("webhook-signature"))?;
        let timestamp: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| SignatureError::BadTimestamp)?;
        if now.abs_diff(timestamp) > TOLERANCE_SECS.unsigned_abs() {
            return Err(SignatureError::StaleTimestamp);
        }
        let matched = signatures
            .split_whitespace()
            .filter_map(|s| s.split_once(','))
            .filter(|(version, _)| *version == "v1")
            .filter_map(|(_, sig)| STANDARD.decode(sig).ok())
            // verify_slice compares in constant time.
            .any(|tag| self.mac(id, timestamp, body).verify_slice(&tag).is_ok());
        if matched {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example in the Standard Webhooks specification.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn matches_the_specification_example() {
        let secret = SigningSecret::parse(SECRET).expect("secret");
        assert_eq!(secret.sign(ID, TIMESTAMP, BODY), SIGNATURE);
        let ts = TIMESTAMP.to_string();
        assert_eq!(
            secret.verify(Some(ID), Some(&ts), Some(SIGNATURE), BODY, TIMESTAMP + 60),
            Ok(())
        );
    }

    #[test]
    fn any_of_several_signatures_and_nothing_else() {
        let secret = SigningSecret::parse(SECRET).expect("secret");
        let ts = TIMESTAMP.to_string();
        let rotated = format!("v1,bm90IHRoaXMgb25l {SIGNATURE} v2,whatever");
        assert_eq!(
            secret.verify(Some(ID), Some(&ts), Some(&rotated), BODY, TIMESTAMP),
            Ok(())
        );
        let cases = [
            (
                Some(ID),
                Some(ts.as_str()),
                Some("v1,AAAA"),
                BODY,
                TIMESTAMP,
                SignatureError::Mismatch,
            ),
            (
                Some(ID),
                Some(ts.as_str()),
                Some(SIGNATURE),
                &b"{}"[..],
                TIMESTAMP,
                SignatureError::Mismatch,
            ),
            (
                Some("msg_other"),
                Some(ts.as_str()),
                Some(SIGNATURE),
                BODY,
                TIMESTAMP,
                SignatureError::Mismatch,
            ),
            (
                Some(ID),
                Some(ts.as_str()),
                Some(SIGNATURE),
                BODY,
                TIMESTAMP + 301,
                SignatureError::StaleTimestamp,
            ),
            (
                Some(ID),
                Some(ts.as_str()),
                Some(SIGNATURE),
                BODY,
                TIMESTAMP - 301,
                SignatureError::StaleTimestamp,
            ),
            (
                Some(ID),
                Some("soon"),
                Some(SIGNATURE),
                BODY,
                TIMESTAMP,
                SignatureError::BadTimestamp,
            ),
            (
                Some(ID),
                Some("-9223372036854775808"),
                Some(SIGNATURE),
                BODY,
                TIMESTAMP,
                SignatureError::StaleTimestamp,
            ),
            (
                None,
                Some(ts.as_str()),
                Some(SIGNATURE),
                BODY,
                TIMESTAMP,
                SignatureError::MissingHeader("webhook-id"),
            ),
        ];
        for (id, ts, sig, body, now, expected) in cases {
            assert_eq!(
                secret.verify(id, ts, sig, body, now),
                Err(expected.clone()),
                "{expected:?}"
            );
        }
    }

    #[test]
    fn secrets_are_checked_and_never_printed() {
        assert!(SigningSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(SigningSecret::parse("whsec_!!!").is_err());
        assert!(SigningSecret::parse("whsec_c2hvcnQ=").is_err());
        let secret = SigningSecret::parse(SECRET).expect("secret");
        assert!(!format!("{secret:?}").contains("MfKQ"));
    }
}
