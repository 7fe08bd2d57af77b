//! `registryget PATH` / `registryput PATH`: the seed spec's two commands as
//! SSH exec requests (`ssh host registryget /v1/images/ID/json`), shared by
//! the russh server and stdio mode under a forced command.
//!
//! The command line is shell-split and whitelisted like git-shell does:
//! `registryget [-H 'Name: value']... PATH` and the same for `registryput`,
//! whose request body is the channel's stdin. The response body goes to
//! stdout; on an error status the registry's message goes to stderr and the
//! exit status is 1 (2 for a usage error).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use berth_transport::wire::error_message;

use crate::registry::{BoxError, Identity, Registry, ReqBody};

/// A parsed exec command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCommand {
    /// GET for `registryget`, PUT for `registryput`.
    pub method: Method,
    /// The request path (with query), starting with `/`.
    pub path: String,
    /// Extra request headers from `-H`.
    pub headers: Vec<(String, String)>,
}

/// Parses an exec command line. `Ok(None)` when the first word is not one of
/// ours (the caller refuses the request); `Err` for a malformed invocation.
pub fn parse(command_line: &str) -> Result<Option<ExecCommand>, String> {
    let words = shlex::split(command_line).ok_or("unbalanced quotes in command")?;
    let Some((first, args)) = words.split_first() else {
        return Ok(None);
    };
    let program = first.rsplit('/').next().unwrap_or(first);
    let method = match program {
        "registryget" => Method::GET,
        "registryput" => Method::PUT,
        _ => return Ok(None),
    };
    let mut headers = Vec::new();
    let mut path = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "-H" || arg == "--header" {
            let h = it.next().ok_or("-H needs a 'Name: value' argument")?;
            let (k, v) = h
                .split_once(':')
                .ok_or_else(|| format!("bad header {h:?}: expected 'Name: value'"))?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        } else if path.is_none() && arg.starts_with('/') {
            path = Some(arg.clone());
        } else {
            return Err(format!("unexpected argument {arg:?}"));
        }
    }
    let path = path.ok_or_else(|| format!("usage: {program} [-H 'Name: value']... /PATH"))?;
    Ok(Some(ExecCommand {
        method,
        path,
        headers,
    }))
}

/// A request body read from a byte stream (the channel's or process's stdin).
pub fn body_from_reader<R>(reader: R) -> ReqBody
where
    R: AsyncRead + Send + 'static,
{
    StreamBody::new(
        ReaderStream::with_capacity(reader, 256 * 1024)
            .map_ok(Frame::data)
            .map_err(BoxError::from),
    )
    .boxed_unsync()
}

/// Runs one exec command against the registry: `stdin` is the request body
/// (used by PUT only), the response body goes to `stdout`, error text to
/// `stderr`. Returns the exit status.
pub async fn run<O, E>(
    registry: Arc<Registry>,
    cmd: ExecCommand,
    who: &Identity,
    stdin: ReqBody,
    mut stdout: O,
    mut stderr: E,
) -> u32
where
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let body: ReqBody = if cmd.method == Method::PUT {
        stdin
    } else {
        Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync()
    };
    let mut builder = Request::builder()
        .method(cmd.method.clone())
        .uri(&cmd.path)
        .header("host", "localhost");
    for (k, v) in &cmd.headers {
        match (
            HeaderName::try_from(k.as_str()),
            HeaderValue::try_from(v.as_str()),
        ) {
            (Ok(k), Ok(v)) => builder = builder.header(k, v),
            _ => {
                let _ = stderr
                    .write_all(format!("invalid header {k:?}\n").as_bytes())
                    .await;
                return 2;
            }
        }
    }
    let req = match builder.body(body) {
        Ok(r) => r,
        Err(e) => {
            let _ = stderr
                .write_all(format!("invalid request: {e}\n").as_bytes())
                .await;
            return 2;
        }
    };
    let resp = registry.handle(req, who).await;
    let status = resp.status();
    let mut body = resp.into_body();
    if status.is_success() {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Ok(data) = f.into_data() {
                        if stdout.write_all(&data).await.is_err() {
                            return 1;
                        }
                    }
                }
                Err(e) => {
                    let _ = stderr
                        .write_all(format!("reading response: {e}\n").as_bytes())
                        .await;
                    return 1;
                }
            }
        }
        let _ = stdout.flush().await;
        0
    } else {
        let bytes = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let message = error_message(&bytes);
        let _ = stderr
            .write_all(format!("{}: {message}\n", status).as_bytes())
            .await;
        let _ = stderr.flush().await;
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        let c = parse("registryget /v1/_ping").unwrap().unwrap();
        assert_eq!((c.method, c.path.as_str()), (Method::GET, "/v1/_ping"));
        let c = parse(
            "/usr/bin/registryput -H 'X-Docker-Checksum-Payload: sha256:ab' /v1/images/x/checksum",
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.method, Method::PUT);
        assert_eq!(
            c.headers,
            vec![("X-Docker-Checksum-Payload".into(), "sha256:ab".into())]
        );
        assert_eq!(parse("bash -c id").unwrap(), None);
        assert_eq!(parse("").unwrap(), None);
        assert!(parse("registryget").is_err());
        assert!(parse("registryget /a /b").is_err());
        assert!(parse("registryget 'unbalanced").is_err());
        assert!(parse("registryget -H nocolon /x").is_err());
    }
}
