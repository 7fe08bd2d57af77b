//! V1 users (`v1-protocol.md` §3.2): accounts are SSH keys, so login
//! only has to let 1.0–1.10 clients through.

#![allow(clippy::result_large_err)]

use http::StatusCode;
use serde_json::{json, Value};

use super::super::response::{self, v1_error, ReqBody};
use super::super::{Identity, Registry};
use super::{read_small_body, V1Result};

/// `POST /v1/users/`: accounts are SSH keys, so nothing is created; the
/// reference's "already exists" answer tells 1.0–1.10 clients to continue
/// with the `GET /v1/users/` that logs in (`v1-protocol.md` §3.2).
pub(crate) async fn create_user(reg: &Registry, body: ReqBody, who: &Identity) -> V1Result {
    let body = read_small_body(reg, who, body).await?;
    if serde_json::from_slice::<Value>(&body).is_err() {
        return Err(v1_error(StatusCode::BAD_REQUEST, "Error Decoding JSON"));
    }
    Ok(response::json(
        StatusCode::BAD_REQUEST,
        &json!("Username or email already exists"),
    ))
}
