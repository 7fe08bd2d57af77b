//! `docker berth`: the Docker CLI plugin (`docker-berth` in
//! `~/.docker/cli-plugins/` or `/usr/libexec/docker/cli-plugins/`).
//!
//! * `docker berth push IMAGE REGISTRY [NAME[:TAG]]` — the engine's image
//!   export streams straight into `berth push` (nothing spooled unless the
//!   archive reader must); when the registry's `NAME:TAG` already is that
//!   image, nothing is exported at all.
//! * `docker berth pull REGISTRY NAME[:TAG]` — `berth pull`'s archive
//!   streams straight into the engine's image load.
//!
//! The engine is reached through [`crate::docker`] (honouring
//! `DOCKER_HOST`); the registry like every berth command (`ssh://`, a
//! directory, `http(s)://`). The plugin's command line ([`PluginCli`]) is
//! defined with the others in `cli.rs`; this module runs it.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use crate::archive::progress::{Mode, Progress};
use crate::archive::reference::ImageRef;
use crate::archive::PushOptions;
use crate::cli::{
    BerthCommand, CliError, PluginCli, PluginCommand, PluginPullArgs, PluginPushArgs,
};
use crate::docker::{Engine, EngineBody};
use crate::error::ClientError;
use crate::registry::V2Connection;

/// Most tags of the target repository looked at for the image before
/// exporting it.
const TAGS_LOOKED_AT: usize = 100;

/// A manifest of repository `name` that is engine image `id`, found among
/// its first [`TAGS_LOOKED_AT`] tags; `None` when the repository is new or
/// does not hold the image.
async fn held_under_another_tag(
    transport: &crate::transport::Transport,
    conn: &mut V2Connection,
    name: &str,
    id: &str,
) -> Result<Option<crate::registry::FetchedManifest>, ClientError> {
    let path = format!("/v2/{name}/tags/list");
    let listed = match crate::catalog::call(transport, http::Method::GET, &path).await {
        Ok(v) => v,
        Err(ClientError::Status { status, .. }) if status == http::StatusCode::NOT_FOUND => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let tags = listed["tags"].as_array().cloned().unwrap_or_default();
    for tag in tags.iter().filter_map(|t| t.as_str()).take(TAGS_LOOKED_AT) {
        match conn.get_manifest(name, tag).await {
            Ok(m) if is_image(&m.bytes, m.digest.as_str(), id) => return Ok(Some(m)),
            Ok(_) => {}
            Err(ClientError::Status { status, .. }) if status == http::StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// The metadata the docker CLI asks every plugin for.
pub fn metadata() -> serde_json::Value {
    serde_json::json!({
        "SchemaVersion": "0.1.0",
        "Vendor": "berth",
        "Version": crate::VERSION,
        "ShortDescription": "Push and pull images to a berth registry over SSH",
    })
}

/// Runs one plugin command.
pub async fn run(cli: PluginCli) -> Result<(), CliError> {
    match cli.command {
        PluginCommand::Metadata => {
            println!("{}", metadata());
            Ok(())
        }
        PluginCommand::Berth {
            command: BerthCommand::Push(a),
        } => push(a).await,
        PluginCommand::Berth {
            command: BerthCommand::Pull(a),
        } => pull(a).await,
    }
}

fn bad_name(s: &str) -> ClientError {
    ClientError::Usage(format!(
        "bad image name {s:?}: expected NAME[:TAG] with lowercase name components"
    ))
}

/// Whether the manifest `bytes` (digest `digest`) is the engine image `id`:
/// its config is the image (the classic image store's id), or it is the
/// manifest or index itself (the containerd image store's id).
fn is_image(bytes: &[u8], digest: &str, id: &str) -> bool {
    if digest == id {
        return true;
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return false;
    };
    v.pointer("/config/digest").and_then(|d| d.as_str()) == Some(id)
}

/// `docker berth push`.
async fn push(a: PluginPushArgs) -> Result<(), CliError> {
    let target_text = a.name.clone().unwrap_or_else(|| a.image.clone());
    let target = ImageRef::parse(&target_text).ok_or_else(|| bad_name(&target_text))?;
    let target_text = format!("{}:{}", target.name, target.tag_or_default());
    let compress = a.compress.options()?;
    let engine = Engine::from_env()?;
    let id = engine.image_id(&a.image).await?.ok_or_else(|| {
        ClientError::Usage(format!("no image {:?} in the docker engine", a.image))
    })?;
    let transport = Arc::new(a.ssh.transport(&a.registry)?);
    let mut conn = V2Connection::open(&transport).await?;
    match conn
        .get_manifest(&target.name, target.tag_or_default())
        .await
    {
        Ok(m) if is_image(&m.bytes, m.digest.as_str(), &id) => {
            if !a.quiet {
                println!(
                    "{target_text} {} (already there: image {id}; nothing exported)",
                    m.digest
                );
            }
            return Ok(());
        }
        // Another image under that tag, or none yet: push.
        Ok(_) => {}
        Err(ClientError::Status { status, .. }) if status == http::StatusCode::NOT_FOUND => {}
        Err(e) => return Err(e.into()),
    }
    // The image under another tag of the repository: the new tag is that
    // manifest, put again; nothing is exported either.
    if let Some(m) = held_under_another_tag(&transport, &mut conn, &target.name, &id).await? {
        conn.put_manifest(
            &target.name,
            target.tag_or_default(),
            &m.media_type,
            &m.bytes,
            &m.digest,
        )
        .await?;
        if !a.quiet {
            println!(
                "{target_text} {} (already there under another tag: image {id}; nothing exported)",
                m.digest
            );
        }
        return Ok(());
    }
    drop(conn);
    let export = engine.export(&a.image).await?;
    let raw = tokio_util::io::SyncIoBridge::new(export);
    let args = PushOptions {
        connect: a.ssh.into(),
        input: "-".into(),
        jobs: a.jobs,
        quiet: a.quiet,
        json: false,
        registry: a.registry,
        name: Some(target_text),
        compress,
    };
    crate::archive::push_stream(
        args,
        Box::new(raw),
        "the docker engine's export".to_string(),
    )
    .await?;
    Ok(())
}

/// `docker berth pull`.
async fn pull(a: PluginPullArgs) -> Result<(), CliError> {
    let r = ImageRef::parse(&a.name).ok_or_else(|| bad_name(&a.name))?;
    let engine = Engine::from_env()?;
    let transport = a.ssh.transport(&a.registry)?;
    let mode = if a.quiet { Mode::Quiet } else { Mode::Auto };
    let progress = Progress::new(mode, "pull", false);
    let (mut writer, reader) = tokio::io::duplex(1 << 20);
    let body: EngineBody = StreamBody::new(
        tokio_util::io::ReaderStream::new(reader).map_ok(|b: Bytes| Frame::data(b)),
    )
    .boxed_unsync();
    let write = async {
        let result = crate::archive::pull::write_archive(
            &transport,
            &r,
            &mut writer,
            "the docker engine",
            &progress,
        )
        .await;
        // The end of the archive ends the upload.
        drop(writer);
        result
    };
    let (written, loaded) = tokio::join!(write, engine.load(body));
    // The engine's refusal explains a write cut short by it.
    let loaded = loaded?;
    let digest = written?;
    progress.finish(&format!("{r} into the docker engine"));
    if !a.quiet {
        for line in loaded {
            println!("{line}");
        }
        println!("{r} {digest}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_id_matches_its_config_or_the_manifest_itself() {
        let id = format!("sha256:{}", "c".repeat(64));
        let manifest = serde_json::to_vec(&serde_json::json!({"config": {"digest": id}})).unwrap();
        assert!(is_image(&manifest, "sha256:other", &id));
        assert!(is_image(b"{}", &id, &id));
        assert!(!is_image(&manifest, "sha256:other", "sha256:else"));
    }

    #[test]
    fn metadata_has_what_the_docker_cli_requires() {
        let m = metadata();
        assert_eq!(m["SchemaVersion"], "0.1.0");
        assert_eq!(m["Vendor"], "berth");
        assert!(m["ShortDescription"]
            .as_str()
            .is_some_and(|s| !s.is_empty()));
    }
}
