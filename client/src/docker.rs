//! The Docker Engine API, just what `docker berth` needs: an image's id,
//! its export (`docker save`'s stream) and an image load (`docker load`),
//! each streamed, on the engine's socket.
//!
//! The engine is found like the docker CLI finds it: `DOCKER_HOST`
//! (`unix:///path` or `tcp://host:port`, plain HTTP), else
//! `unix:///var/run/docker.sock`. TLS endpoints (`DOCKER_TLS_VERIFY`) and
//! CLI contexts are not supported and say so.

use std::path::PathBuf;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, BodyStream, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::ClientError;

/// A request body sent to the engine.
pub type EngineBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// Where the engine listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket.
    Unix(PathBuf),
    /// `host:port`, plain HTTP.
    Tcp(String),
}

impl Endpoint {
    /// The endpoint `DOCKER_HOST` names (`None`: the default socket).
    pub fn parse(docker_host: Option<&str>) -> Result<Endpoint, ClientError> {
        let Some(host) = docker_host.filter(|h| !h.is_empty()) else {
            return Ok(Endpoint::Unix(PathBuf::from("/var/run/docker.sock")));
        };
        if let Some(path) = host.strip_prefix("unix://") {
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = host.strip_prefix("tcp://") {
            return Ok(Endpoint::Tcp(addr.trim_end_matches('/').to_string()));
        }
        Err(ClientError::Usage(format!(
            "DOCKER_HOST={host}: only unix:// and tcp:// engines are supported"
        )))
    }
}

/// The engine the docker CLI would talk to.
#[derive(Debug, Clone)]
pub struct Engine {
    endpoint: Endpoint,
}

fn io(what: &str, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> ClientError {
    ClientError::Io {
        what: what.to_string(),
        source: std::io::Error::other(e),
    }
}

/// An image name or id as the engine API takes it in a path or query:
/// only the characters references and ids are made of.
fn checked_image(image: &str) -> Result<&str, ClientError> {
    let ok = !image.is_empty()
        && !image.starts_with('-')
        && image
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:/@".contains(&b))
        && !image.split('/').any(|c| c == ".." || c == ".");
    if ok {
        Ok(image)
    } else {
        Err(ClientError::Usage(format!("bad image reference {image:?}")))
    }
}

impl Engine {
    /// The engine `DOCKER_HOST` names, or the default socket.
    pub fn from_env() -> Result<Engine, ClientError> {
        if std::env::var_os("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty()) {
            return Err(ClientError::Usage(
                "DOCKER_TLS_VERIFY is set: TLS engine endpoints are not supported".to_string(),
            ));
        }
        let host = std::env::var("DOCKER_HOST").ok();
        Ok(Engine {
            endpoint: Endpoint::parse(host.as_deref())?,
        })
    }

    /// Sends one request on a fresh connection; the answer streams.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: EngineBody,
    ) -> Result<Response<Incoming>, ClientError> {
        let what = format!("docker engine {method} {path}");
        match &self.endpoint {
            Endpoint::Unix(socket) => {
                let stream = tokio::net::UnixStream::connect(socket)
                    .await
                    .map_err(|e| io(&format!("connecting to {}", socket.display()), e))?;
                Self::exchange(stream, method, path, body, &what).await
            }
            Endpoint::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| io(&format!("connecting to {addr}"), e))?;
                Self::exchange(stream, method, path, body, &what).await
            }
        }
    }

    async fn exchange<S>(
        stream: S,
        method: Method,
        path: &str,
        body: EngineBody,
        what: &str,
    ) -> Result<Response<Incoming>, ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| io(what, e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "docker engine connection");
            }
        });
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "docker")
            .body(body)
            .map_err(|e| io(what, e))?;
        sender.send_request(req).await.map_err(|e| io(what, e))
    }

    /// The engine's answer as an error, its `message` field when JSON.
    async fn refusal(what: &str, resp: Response<Incoming>) -> ClientError {
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
        ClientError::Status {
            what: what.to_string(),
            status,
            message,
        }
    }

    /// The id (`sha256:...`) of a local image, `None` when there is none.
    pub async fn image_id(&self, image: &str) -> Result<Option<String>, ClientError> {
        let image = checked_image(image)?;
        let path = format!("/images/{image}/json");
        let resp = self.send(Method::GET, &path, empty()).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if resp.status() != StatusCode::OK {
            return Err(Self::refusal(&format!("inspecting image {image}"), resp).await);
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| io("reading the image inspection", e))?
            .to_bytes();
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| io("reading the image inspection", e))?;
        v["Id"]
            .as_str()
            .map(|id| Some(id.to_string()))
            .ok_or_else(|| io("reading the image inspection", "no Id"))
    }

    /// `docker save IMAGE` as a stream of bytes (a tar).
    pub async fn export(
        &self,
        image: &str,
    ) -> Result<impl AsyncRead + Send + Unpin + 'static, ClientError> {
        let image = checked_image(image)?;
        let path = format!("/images/get?names={image}");
        let resp = self.send(Method::GET, &path, empty()).await?;
        if resp.status() != StatusCode::OK {
            return Err(Self::refusal(&format!("exporting image {image}"), resp).await);
        }
        let stream = BodyStream::new(resp.into_body())
            .try_filter_map(|frame| std::future::ready(Ok(frame.into_data().ok())))
            .map_err(std::io::Error::other);
        Ok(tokio_util::io::StreamReader::new(stream))
    }

    /// `docker load` of the tar streamed as `body`; the images the engine
    /// says it loaded.
    pub async fn load(&self, body: EngineBody) -> Result<Vec<String>, ClientError> {
        let resp = self.send(Method::POST, "/images/load", body).await?;
        if resp.status() != StatusCode::OK {
            return Err(Self::refusal("loading the image", resp).await);
        }
        let text = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| io("reading the load answer", e))?
            .to_bytes();
        // A JSON message stream: `{"stream": "Loaded image: ..."}` lines,
        // or `{"error": ...}` when the engine refused the archive.
        let mut loaded = Vec::new();
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value =
                serde_json::from_slice(line).map_err(|e| io("reading the load answer", e))?;
            if let Some(error) = v["error"].as_str() {
                return Err(ClientError::Status {
                    what: "loading the image".to_string(),
                    status: StatusCode::OK,
                    message: error.to_string(),
                });
            }
            if let Some(s) = v["stream"].as_str() {
                let s = s.trim();
                if !s.is_empty() {
                    loaded.push(s.to_string());
                }
            }
        }
        Ok(loaded)
    }
}

fn empty() -> EngineBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_forms() {
        assert_eq!(
            Endpoint::parse(None).unwrap(),
            Endpoint::Unix("/var/run/docker.sock".into())
        );
        assert_eq!(
            Endpoint::parse(Some("unix:///run/user/1000/docker.sock")).unwrap(),
            Endpoint::Unix("/run/user/1000/docker.sock".into())
        );
        assert_eq!(
            Endpoint::parse(Some("tcp://127.0.0.1:2375")).unwrap(),
            Endpoint::Tcp("127.0.0.1:2375".into())
        );
        assert!(Endpoint::parse(Some("ssh://host")).is_err());
    }

    #[test]
    fn image_references_cannot_smuggle_query_or_path_syntax() {
        assert!(checked_image("team/app:1").is_ok());
        assert!(checked_image("sha256:abc").is_ok());
        for bad in [
            "a?b",
            "a&names=b",
            "a b",
            "a#b",
            "-x",
            "",
            "../containers",
            "a/./b",
        ] {
            assert!(checked_image(bad).is_err(), "{bad}");
        }
    }
}
