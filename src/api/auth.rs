//! Bearer-key authentication for `/v1/*`.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, Error, ResponseError};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::problem::ApiError;

/// The accepted keys, kept only as SHA-256 digests: comparing fixed-length
/// digests in constant time leaks neither a key nor its length.
#[derive(Clone)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl ApiKeys {
    pub fn new(keys: &[SecretString]) -> Self {
        Self {
            digests: keys.iter().map(|k| digest(k.expose_secret())).collect(),
        }
    }

    pub fn accepts(&self, presented: &str) -> bool {
        let presented = digest(presented);
        // Check every key, so timing does not tell which one matched.
        self.digests.iter().fold(false, |found, d| {
            constant_time_eq::constant_time_eq(d, &presented) | found
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

/// Middleware: answers 401 problem+json unless a known key is presented.
pub async fn require_api_key(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let authorized = match (req.app_data::<web::Data<ApiKeys>>(), bearer(&req)) {
        (Some(keys), Some(token)) => keys.accepts(token),
        _ => false,
    };
    if !authorized {
        let response = ApiError::Unauthorized.error_response();
        return Ok(req.into_response(response).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}
