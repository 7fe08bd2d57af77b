//! How push and pull report progress: `indicatif` bars on a terminal (one
//! per blob in flight plus a total, with rates), one summary line when
//! stderr is not a terminal, nothing with `--quiet`, and one JSON object
//! per line with `--json` (for scripts).
//!
//! JSON events go to stdout, except when stdout carries the archive
//! (`berth pull` without `--output`), where they go to stderr. Each event
//! has an `"event"` field: `start`, `blob` (with `"action"`: `skipped`,
//! `mounted`, `uploaded`, `downloaded`), `resume`, `manifest`, `done`. Bars and the
//! summary always go to stderr.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

/// What the user asked to see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bars on a terminal, a summary line otherwise.
    Auto,
    /// Nothing but errors.
    Quiet,
    /// JSON lines.
    Json,
}

enum Output {
    Bars {
        multi: MultiProgress,
        total: ProgressBar,
        blobs: Mutex<HashMap<String, ProgressBar>>,
    },
    Summary,
    Quiet,
    Json {
        stderr: bool,
    },
}

/// Progress of one push or pull; shared by the transfer tasks.
pub struct Progress {
    output: Output,
    verb: &'static str,
    started: Instant,
    blobs: AtomicU64,
    skipped: AtomicU64,
    bytes: AtomicU64,
    skipped_bytes: AtomicU64,
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.get(..12).unwrap_or(hex)
}

fn human(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

impl Progress {
    /// A reporter for `verb` ("push" or "pull"). `json_to_stderr` when
    /// stdout carries data.
    pub fn new(mode: Mode, verb: &'static str, json_to_stderr: bool) -> Progress {
        let output = match mode {
            Mode::Quiet => Output::Quiet,
            Mode::Json => Output::Json {
                stderr: json_to_stderr,
            },
            Mode::Auto if std::io::stderr().is_terminal() => {
                let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
                let total = multi.add(ProgressBar::new(0));
                total.set_style(
                    ProgressStyle::with_template(
                        "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                total.set_message(format!("{verb} total"));
                total.enable_steady_tick(Duration::from_millis(200));
                Output::Bars {
                    multi,
                    total,
                    blobs: Mutex::new(HashMap::new()),
                }
            }
            Mode::Auto => Output::Summary,
        };
        Progress {
            output,
            verb,
            started: Instant::now(),
            blobs: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            skipped_bytes: AtomicU64::new(0),
        }
    }

    /// Writes one JSON event (JSON mode only).
    pub fn event(&self, v: Value) {
        if let Output::Json { stderr } = self.output {
            let line = format!("{v}\n");
            let _ = if stderr {
                std::io::stderr().lock().write_all(line.as_bytes())
            } else {
                let mut out = std::io::stdout().lock();
                out.write_all(line.as_bytes()).and_then(|_| out.flush())
            };
        }
    }

    /// A plain message: a bar-safe line on a terminal, nothing otherwise.
    pub fn note(&self, text: &str) {
        if let Output::Bars { multi, .. } = &self.output {
            let _ = multi.println(text);
        }
    }

    /// Announces the work: `blobs` blobs, `bytes` in all.
    pub fn start(&self, what: &str, blobs: usize, bytes: u64) {
        if let Output::Bars { total, .. } = &self.output {
            total.set_length(bytes);
        }
        self.event(json!({"event": "start", "op": self.verb, "what": what, "blobs": blobs, "bytes": bytes}));
    }

    /// A blob transfer begins.
    pub fn blob_start(&self, digest: &str, size: u64) {
        if let Output::Bars {
            multi,
            blobs,
            total,
        } = &self.output
        {
            let bar = multi.insert_before(total, ProgressBar::new(size));
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_message(short(digest).to_string());
            if let Ok(mut b) = blobs.lock() {
                b.insert(digest.to_string(), bar);
            }
        }
    }

    /// `n` more bytes of a blob moved.
    pub fn blob_bytes(&self, digest: &str, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        if let Output::Bars { blobs, total, .. } = &self.output {
            total.inc(n);
            if let Some(bar) = blobs.lock().ok().and_then(|b| b.get(digest).cloned()) {
                bar.inc(n);
            }
        }
    }

    /// A failed attempt's bytes are sent again: take them off the counts.
    pub fn blob_rewind(&self, digest: &str, n: u64) {
        self.bytes
            .fetch_sub(n.min(self.bytes.load(Ordering::Relaxed)), Ordering::Relaxed);
        if let Output::Bars { blobs, total, .. } = &self.output {
            total.set_position(total.position().saturating_sub(n));
            if let Some(bar) = blobs.lock().ok().and_then(|b| b.get(digest).cloned()) {
                bar.set_position(bar.position().saturating_sub(n));
            }
        }
    }

    /// A blob is finished: `action` is `uploaded`, `downloaded`, `skipped`
    /// (already in the repository) or `mounted` (linked from another
    /// repository without sending it); the last two count as present.
    pub fn blob_done(&self, digest: &str, size: u64, action: &str) {
        self.blobs.fetch_add(1, Ordering::Relaxed);
        if action == "skipped" || action == "mounted" {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            self.skipped_bytes.fetch_add(size, Ordering::Relaxed);
        }
        match &self.output {
            Output::Bars {
                multi,
                blobs,
                total,
            } => {
                if action == "skipped" || action == "mounted" {
                    total.inc(size);
                    let _ = multi.println(format!("{:>12} already present", short(digest)));
                }
                if let Some(bar) = blobs.lock().ok().and_then(|mut b| b.remove(digest)) {
                    bar.finish_and_clear();
                    multi.remove(&bar);
                    let _ =
                        multi.println(format!("{:>12} {action} ({})", short(digest), human(size)));
                }
            }
            Output::Json { .. } => self
                .event(json!({"event": "blob", "digest": digest, "size": size, "action": action})),
            _ => {}
        }
    }

    /// A download resumes at `offset` after a broken connection.
    pub fn resume(&self, digest: &str, offset: u64, error: &str) {
        self.note(&format!(
            "{:>12} resuming at byte {offset}: {error}",
            short(digest)
        ));
        self.event(json!({"event": "resume", "digest": digest, "offset": offset, "error": error}));
    }

    /// A manifest was pushed or pulled.
    pub fn manifest(&self, reference: &str, digest: &str) {
        self.note(&format!("{reference}: digest {digest}"));
        self.event(json!({"event": "manifest", "reference": reference, "digest": digest}));
    }

    /// Bytes of blob content moved so far (skipped blobs excluded).
    pub fn bytes_transferred(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Ends the report: the summary line or the `done` event. `what` names
    /// the result (tags pushed, file written).
    pub fn finish(&self, what: &str) {
        let blobs = self.blobs.load(Ordering::Relaxed);
        let skipped = self.skipped.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64();
        let moved = if self.verb == "push" {
            "sent"
        } else {
            "received"
        };
        let line = format!(
            "berth {}: {what}: {blobs} blobs, {skipped} already present, {} {moved} in {secs:.1}s",
            self.verb,
            human(bytes)
        );
        match &self.output {
            Output::Bars { multi, total, .. } => {
                total.finish_and_clear();
                let _ = multi.clear();
                eprintln!("{line}");
            }
            Output::Summary => eprintln!("{line}"),
            Output::Quiet => {}
            Output::Json { .. } => self.event(json!({
                "event": "done", "op": self.verb, "what": what, "blobs": blobs,
                "skipped": skipped, "bytes": bytes,
                "skipped_bytes": self.skipped_bytes.load(Ordering::Relaxed),
                "seconds": secs,
            })),
        }
    }
}
