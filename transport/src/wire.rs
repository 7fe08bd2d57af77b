//! The wire vocabulary both ends of berth speak: the SSH subsystem name,
//! the header names of the V2 API and of berth's extensions to it, and how
//! an error body is read. Defined once here, in the crate the client and
//! the server both depend on, so that the two sides cannot drift apart.
//!
//! Header names are lower case (HTTP/1.1 header names are
//! case-insensitive; `http::HeaderName` needs lower case), usable as
//! `HeaderName::from_static(...)` or as a `HeaderMap` key.

/// The SSH subsystem that carries HTTP/1.1 to the registry service (also
/// the program name an sshd `ForceCommand`/`command=` setup sees).
pub const SUBSYSTEM: &str = "docker-registry";

/// `Docker-Content-Digest`: the digest of the manifest or blob an answer
/// is about (on manifest GET/HEAD/PUT, blob HEAD/GET, and the 201 of an
/// upload or mount).
pub const CONTENT_DIGEST_HEADER: &str = "docker-content-digest";

/// `Docker-Upload-UUID`: the id of an upload session, on its answers.
pub const UPLOAD_UUID_HEADER: &str = "docker-upload-uuid";

/// `Docker-Distribution-API-Version`: carried by every V2 answer.
pub const API_VERSION_HEADER: &str = "docker-distribution-api-version";
/// The value of [`API_VERSION_HEADER`].
pub const API_VERSION: &str = "registry/2.0";

/// `OCI-Subject`: on the answer to a manifest PUT whose manifest has a
/// `subject`, saying the registry indexed it for the referrers API.
pub const OCI_SUBJECT_HEADER: &str = "oci-subject";

/// `OCI-Filters-Applied`: on a referrers answer filtered by
/// `artifactType`.
pub const OCI_FILTERS_APPLIED_HEADER: &str = "oci-filters-applied";

/// berth's extension on the POST and PATCH answers of an upload session:
/// the sha256 of every byte the session holds. `berth push` checks it
/// against the archive's digest instead of hashing what it sends a second
/// time (issue 9); other clients ignore it.
pub const UPLOAD_DIGEST_HEADER: &str = "berth-upload-digest";

/// berth's extension on a PATCH request: `true` says no byte follows
/// before the closing PUT. A session the server saw whole then answers
/// with the diff_id and uncompressed size of its bytes
/// ([`DIFF_ID_HEADER`], [`UNCOMPRESSED_SIZE_HEADER`]), so `berth push`
/// compares them with the image config before committing anything
/// (issue 17).
pub const LAST_CHUNK_HEADER: &str = "berth-last-chunk";

/// berth's extension naming a layer blob's diff_id (sha256 of its
/// uncompressed bytes), on blob answers and the last PATCH of a session.
pub const DIFF_ID_HEADER: &str = "berth-diff-id";

/// berth's extension giving a layer blob's uncompressed size in bytes,
/// beside [`DIFF_ID_HEADER`].
pub const UNCOMPRESSED_SIZE_HEADER: &str = "berth-uncompressed-size";

/// berth's announcement on every V2 answer that it verifies what a client
/// would otherwise check itself: the digest of every blob at the close,
/// and at manifest PUT each layer's diff_id against the image config
/// (issue 17). `berth push` then skips its local inflate-and-hash; other
/// clients ignore it.
pub const VERIFIES_HEADER: &str = "berth-verifies";
/// The item of [`VERIFIES_HEADER`] saying diff_ids are checked.
pub const VERIFIES_DIFF_ID: &str = "diff-id";

/// berth's extension on a blob HEAD miss: `true` when the registry holds
/// the blob in another repository the caller may read, so a
/// `?mount=<digest>` upload would link it without sending a byte.
pub const MOUNTABLE_HEADER: &str = "berth-blob-mountable";

/// V1 `X-Docker-Endpoints`: on the index answers, the registries that
/// hold the repository's images (the client's next requests go there).
pub const V1_ENDPOINTS_HEADER: &str = "x-docker-endpoints";

/// V1 `X-Docker-Token`: on the index answers, the token the Docker 1.x
/// client hands back to the endpoints (berth issues a placeholder: the
/// SSH key is the credential).
pub const V1_TOKEN_HEADER: &str = "x-docker-token";

/// V1 `X-Docker-Size`: on an image json answer, the layer's size.
pub const V1_SIZE_HEADER: &str = "x-docker-size";

/// V1 `X-Docker-Checksum-Payload`: on an image json answer and on the
/// checksum PUT, `sha256(json + "\n" + layer)`.
pub const V1_CHECKSUM_PAYLOAD_HEADER: &str = "x-docker-checksum-payload";

/// V1 `X-Docker-Registry-Version`: on the ping answer.
pub const V1_REGISTRY_VERSION_HEADER: &str = "x-docker-registry-version";

/// V1 `X-Docker-Registry-Standalone`: on the ping answer (`True`: no
/// separate index).
pub const V1_REGISTRY_STANDALONE_HEADER: &str = "x-docker-registry-standalone";

/// The human message inside an error body: V1's `{"error": ...}`, V2's
/// `{"errors": [{"code", "message"}]}` (as `CODE: message`, joined with
/// `; `), a JSON string, or else the body's text.
pub fn error_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(m) = v.get("error").and_then(|m| m.as_str()) {
            return m.to_string();
        }
        if let Some(errs) = v.get("errors").and_then(|e| e.as_array()) {
            let msgs: Vec<String> = errs
                .iter()
                .map(|e| {
                    let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
                    let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
                    format!("{code}: {msg}")
                })
                .collect();
            return msgs.join("; ");
        }
        if let Some(s) = v.as_str() {
            return s.to_string();
        }
    }
    String::from_utf8_lossy(body).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages() {
        assert_eq!(
            error_message(br#"{"error":"Image not found"}"#),
            "Image not found"
        );
        assert_eq!(
            error_message(br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}"#),
            "BLOB_UNKNOWN: blob unknown"
        );
        assert_eq!(error_message(b"plain"), "plain");
    }

    #[test]
    fn header_names_are_valid_lower_case_names() {
        for name in [
            CONTENT_DIGEST_HEADER,
            UPLOAD_UUID_HEADER,
            API_VERSION_HEADER,
            OCI_SUBJECT_HEADER,
            OCI_FILTERS_APPLIED_HEADER,
            UPLOAD_DIGEST_HEADER,
            LAST_CHUNK_HEADER,
            DIFF_ID_HEADER,
            UNCOMPRESSED_SIZE_HEADER,
            VERIFIES_HEADER,
            MOUNTABLE_HEADER,
        ] {
            assert_eq!(http::HeaderName::from_static(name).as_str(), name, "{name}");
        }
    }
}
