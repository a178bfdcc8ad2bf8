//! Bearer-key authentication for `/v1/*`. Each key has a name (`name:key`
//! in `RISKGATE_API_KEYS`): it scopes idempotency keys and, later, says who
//! acted. A bare key gets a name derived from its hash that does not reveal it.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage, ResponseError};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::problem::ApiError;

/// Who called: the name of the API key presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
}

/// The accepted keys, kept only as SHA-256 digests: comparing fixed-length
/// digests in constant time leaks neither a key nor its length.
#[derive(Clone)]
pub struct ApiKeys {
    keys: Vec<(String, [u8; 32])>,
}

impl ApiKeys {
    pub fn new(entries: &[SecretString]) -> Self {
        let keys = entries
            .iter()
            .map(|entry| {
                let entry = entry.expose_secret().trim();
                match entry.split_once(':') {
                    Some((name, key)) if !name.trim().is_empty() && !key.is_empty() => {
                        (name.trim().to_owned(), digest(key))
                    }
                    _ => {
                        let digest = digest(entry);
                        let short: String =
                            digest[..4].iter().map(|b| format!("{b:02x}")).collect();
                        (format!("key-{short}"), digest)
                    }
                }
            })
            .collect();
        Self { keys }
    }

    /// The name of the key presented, if it is one of ours.
    pub fn identify(&self, presented: &str) -> Option<&str> {
        let presented = digest(presented);
        // Compare with every key, so timing does not tell which one matched.
        self.keys.iter().fold(None, |found, (name, d)| {
            if constant_time_eq::constant_time_eq(d, &presented) {
                Some(name.as_str())
            } else {
                found
            }
        })
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn bearer(req: &ServiceRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Middleware: answers 401 problem+json unless a known key is presented;
/// otherwise records the [`Caller`] for the handlers.
pub async fn require_api_key(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let caller = match (req.app_data::<web::Data<ApiKeys>>(), bearer(&req)) {
        (Some(keys), Some(token)) => keys.identify(token).map(|name| Caller {
            name: name.to_owned(),
        }),
        _ => None,
    };
    let Some(caller) = caller else {
        let response = ApiError::Unauthorized.error_response();
        return Ok(req.into_response(response).map_into_right_body());
    };
    req.extensions_mut().insert(caller);
    Ok(next.call(req).await?.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_and_bare_keys_identify_their_caller() {
        let keys = ApiKeys::new(&[
            SecretString::from("checkout:k1"),
            SecretString::from("alice:k2"),
            SecretString::from("bare-secret"),
        ]);
        assert_eq!(keys.identify("k1"), Some("checkout"));
        assert_eq!(keys.identify("k2"), Some("alice"));
        let bare = keys.identify("bare-secret").expect("bare key works");
        assert!(bare.starts_with("key-") && !bare.contains("bare-secret"));
        assert_eq!(keys.identify("checkout:k1"), None);
        assert_eq!(keys.identify(""), None);
    }
}
