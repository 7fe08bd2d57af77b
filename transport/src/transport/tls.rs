//! TLS over TCP for `https://host[:port]` registries (distribution and
//! other V2 registries that only speak HTTPS).
//!
//! rustls with the *ring* provider. The registry's certificate is checked
//! against the system trust store as rustls-native-certs finds it: the
//! platform's CA bundle, or, when `SSL_CERT_FILE` / `SSL_CERT_DIR` are set,
//! only those (the OpenSSL convention, so a private CA needs no root
//! rights). Its name is checked against the host of the address, a DNS
//! name or an IP address. ALPN offers HTTP/1.1 only, the one protocol the
//! client speaks.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::{connect_tcp, Diagnostics, Stream, TransportError};

/// TLS connections to one `https://` registry; the trust store is loaded
/// once, when the transport is made.
pub struct TlsTransport {
    /// `host:port` to connect to.
    address: String,
    /// The name the certificate must carry.
    server_name: ServerName<'static>,
    connector: TlsConnector,
}

impl TlsTransport {
    /// Loads the trust store for `host` (a DNS name or an IP address, IPv6
    /// in brackets or not) on `port`; nothing connects until the first stream.
    pub fn new(host: &str, port: u16) -> Result<TlsTransport, TransportError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let server_name =
            ServerName::try_from(bare.to_string()).map_err(|_| TransportError::TlsName {
                host: host.to_string(),
            })?;
        let address = if bare.contains(':') {
            format!("[{bare}]:{port}")
        } else {
            format!("{bare}:{port}")
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TransportError::TlsSetup {
                message: e.to_string(),
            })?
            .with_root_certificates(trust_store()?)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsTransport {
            address,
            server_name,
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// A new TCP connection with a completed TLS handshake.
    pub async fn open(&self) -> Result<Stream, TransportError> {
        let tcp = connect_tcp(&self.address).await?;
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|source| TransportError::Tls {
                address: self.address.clone(),
                hint: hint(&source),
                source,
            })?;
        Ok(Stream::new(tls, Diagnostics::default()))
    }
}

/// What to do about a handshake failure, for the certificate errors a
/// private registry typically meets.
fn hint(source: &std::io::Error) -> String {
    use rustls::CertificateError;
    let Some(rustls::Error::InvalidCertificate(e)) = source
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return String::new();
    };
    match e {
        CertificateError::UnknownIssuer | CertificateError::BadSignature => {
            " (the registry's certificate is not trusted here: add its CA to the system trust \
             store, or point SSL_CERT_FILE at a PEM file that holds it)"
                .to_string()
        }
        CertificateError::Other(other)
            if matches!(
                other.0.downcast_ref::<webpki::Error>(),
                Some(webpki::Error::CaUsedAsEndEntity)
            ) =>
        {
            " (the registry presents a CA certificate as its own, as `openssl req -x509` makes \
             by default: serve one with basicConstraints CA:FALSE, self-signed or signed by \
             that CA)"
                .to_string()
        }
        _ => String::new(),
    }
}

/// The CA certificates `https://` registries are checked against.
fn trust_store() -> Result<RootCertStore, TransportError> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!("trust store: {e}");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if ignored > 0 {
        tracing::debug!("trust store: {ignored} unparsable certificates ignored");
    }
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
        let mut message = "no trusted CA certificates in the system store \
                           (or SSL_CERT_FILE / SSL_CERT_DIR)"
            .to_string();
        if !errors.is_empty() {
            message.push_str(&format!(": {}", errors.join("; ")));
        }
        return Err(TransportError::TlsSetup { message });
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_hosts_a_certificate_cannot_name() {
        for host in ["a..b", "under_score!"] {
            assert!(
                matches!(
                    TlsTransport::new(host, 443),
                    Err(TransportError::TlsName { .. })
                ),
                "{host}"
            );
        }
    }
}
