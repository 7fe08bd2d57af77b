//! The catalog's only way to the registry: its HTTP API (V2 manifests,
//! blobs and referrers, `/_berth/...` browse endpoints, V2/V1 deletes)
//! over one connection of a berth-transport `Transport` per page — an SSH
//! channel for `berth shim`, an in-memory stream for `berth-server http`.
//! So the pages show exactly what the caller's key may read, by the same
//! checks as every other client.

use berth_transport::http::{self as wire, HttpConnection};
use berth_transport::transport::Transport;
use http::{Method, Request, StatusCode};
use serde_json::Value;

/// Media types a manifest GET accepts (every kind the registry stores).
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.v1+prettyjws";

/// One HTTP connection to the registry, used for every call of one page.
pub struct Api {
    conn: HttpConnection,
}

/// A registry answer: status and parsed JSON body (`Null` when empty or
/// not JSON).
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub json: Value,
}

impl Api {
    /// Opens a connection on `transport`.
    pub async fn open(transport: &Transport) -> Result<Api, String> {
        HttpConnection::open(transport)
            .await
            .map(|conn| Api { conn })
            .map_err(|e| format!("cannot reach the registry: {e}"))
    }

    /// `method path`, the body read whole (bounded by the transport's
    /// small-body limit: JSON documents only, never a layer).
    pub async fn call(&mut self, method: Method, path: &str) -> Result<Answer, String> {
        let req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(wire::HOST_HEADER, wire::HOST)
            .header(http::header::ACCEPT, ACCEPT)
            .body(wire::empty())
            .map_err(|e| e.to_string())?;
        let what = wire::describe(&method, path);
        let resp = self.conn.send(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = wire::read_small_body(&what, resp.into_body(), &self.conn.diagnostics())
            .await
            .map_err(|e| e.to_string())?;
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok(Answer { status, json })
    }

    /// A GET whose answer must be 200.
    pub async fn get(&mut self, path: &str) -> Result<Value, String> {
        let a = self.call(Method::GET, path).await?;
        if a.status == StatusCode::OK {
            Ok(a.json)
        } else {
            Err(message(&a))
        }
    }
}

/// The registry's error message of an answer (V2 `errors[0].message`, V1
/// `error`), or its status.
pub fn message(a: &Answer) -> String {
    a.json["errors"][0]["message"]
        .as_str()
        .or(a.json["error"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| a.status.to_string())
}
