//! The server's runs: a registry kept in memory (the newest [`MAX_KEPT`] finished runs; older ones are dropped),
//! a bounded queue, and the one engine thread that takes runs from it in order and runs them on the one
//! [`Session`]. Each run collects its step events (with a small preview) for server-sent events, then its files
//! and attention maps, or its one-line error.
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::input_image::Picture;
use crate::output::png;
use crate::pipelines::{Progress, Step};
use crate::session::{AttentionMaps, Files, Request, Session};

/// Runs waiting behind the one in progress; a full queue answers 429.
pub const QUEUE: usize = 4;
/// Finished runs kept for `GET` (the oldest are dropped).
pub const MAX_KEPT: usize = 32;
/// Uploaded pictures kept (the oldest are dropped).
pub const MAX_UPLOADS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl Status {
    pub fn finished(self) -> bool {
        matches!(self, Status::Done | Status::Failed | Status::Cancelled)
    }
}

pub struct Run {
    pub id: String,
    pub request: Request,
    /// The uploaded picture the request edits (its id), if any.
    pub upload: Option<String>,
    pub status: Status,
    /// Server-sent events (name, JSON payload), in order: a `step` per UNet evaluation, then the `result`.
    pub events: Vec<(&'static str, String)>,
    pub error: Option<String>,
    pub prompts: Vec<String>,
    pub files: Vec<(String, Vec<u8>)>,
    pub attention: Option<Value>,
    pub cancel: Arc<AtomicBool>,
    pub submitted: Instant,
    /// Seconds from submission to the first step event and to the result.
    pub first_step_s: Option<f64>,
    pub total_s: Option<f64>,
}

impl Run {
    /// The run as `GET /api/runs/{id}` shows it.
    pub fn summary(&self) -> Value {
        // The picture is shown by its upload id, not as its bytes.
        let request = Request { image: None, ..self.request.clone() };
        json!({
            "id": self.id,
            "status": self.status,
            "request": request,
            "upload": self.upload,
            "prompts": self.prompts,
            "files": self.files.iter().map(|(n, _)| format!("/api/runs/{}/files/{n}", self.id)).collect::<Vec<_>>(),
            "attention": self.attention.is_some(),
            "error": self.error,
            "steps": self.events.len().saturating_sub(usize::from(self.status.finished())),
            "first_step_seconds": self.first_step_s,
            "seconds": self.total_s,
        })
    }
}

#[derive(Default)]
pub struct Registry {
    pub runs: HashMap<String, Run>,
    order: VecDeque<String>,
}

impl Registry {
    fn insert(&mut self, run: Run) {
        self.order.push_back(run.id.clone());
        self.runs.insert(run.id.clone(), run);
        // Drop the oldest finished runs beyond the cap (queued and running ones are never dropped).
        while self.order.len() > MAX_KEPT {
            let Some(pos) = self.order.iter().position(|id| self.runs.get(id).is_some_and(|r| r.status.finished()))
            else {
                break;
            };
            if let Some(id) = self.order.remove(pos) {
                self.runs.remove(&id);
            }
        }
    }

    /// Ids, newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = &Run> {
        self.order.iter().rev().filter_map(|id| self.runs.get(id))
    }
}

/// What the handlers and the engine thread share.
pub struct Shared {
    pub session: Arc<Session>,
    pub registry: Mutex<Registry>,
    /// Woken on every change of any run (SSE streams re-check theirs).
    pub changed: Notify,
    /// Uploaded pictures by id, oldest first.
    pub uploads: Mutex<VecDeque<(String, Picture)>>,
    queue: SyncSender<String>,
}

/// A new unguessable run id: 128 random bits from the OS, in hex.
pub fn new_id() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| Error::msg(format!("no randomness for a run id: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

impl Shared {
    pub fn new(session: Arc<Session>) -> (Arc<Shared>, Receiver<String>) {
        let (queue, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let uploads = Mutex::default();
        (Arc::new(Shared { session, registry: Mutex::default(), changed: Notify::new(), uploads, queue }), rx)
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a checked request; `Err(None)` when the queue is full.
    pub fn submit(
        &self,
        request: Request,
        upload: Option<String>,
        prompts: Vec<String>,
    ) -> std::result::Result<String, Option<Error>> {
        let id = new_id().map_err(Some)?;
        let run = Run {
            id: id.clone(),
            request,
            upload,
            status: Status::Queued,
            events: Vec::new(),
            error: None,
            prompts,
            files: Vec::new(),
            attention: None,
            cancel: Arc::new(AtomicBool::new(false)),
            submitted: Instant::now(),
            first_step_s: None,
            total_s: None,
        };
        self.lock().insert(run);
        match self.queue.try_send(id.clone()) {
            Ok(()) => Ok(id),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                let mut reg = self.lock();
                reg.runs.remove(&id);
                reg.order.retain(|x| x != &id);
                Err(None)
            }
        }
    }

    /// Keeps an uploaded picture; returns its id.
    pub fn upload(&self, picture: Picture) -> Result<String> {
        let id = new_id()?;
        let mut u = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        u.push_back((id.clone(), picture));
        while u.len() > MAX_UPLOADS {
            u.pop_front();
        }
        Ok(id)
    }

    /// An uploaded picture.
    pub fn picture(&self, id: &str) -> Option<Picture> {
        let u = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        u.iter().find(|(k, _)| k == id).map(|(_, p)| p.clone())
    }

    /// Asks a run to stop: a queued run is cancelled at once, a running one at its next step.
    pub fn cancel(&self, id: &str) -> Option<Status> {
        let mut reg = self.lock();
        let run = reg.runs.get_mut(id)?;
        run.cancel.store(true, Ordering::SeqCst);
        if run.status == Status::Queued {
            finish(run, Status::Cancelled, Some("cancelled".into()));
        }
        let s = run.status;
        drop(reg);
        self.changed.notify_waiters();
        Some(s)
    }
}

fn finish(run: &mut Run, status: Status, error: Option<String>) {
    run.status = status;
    run.error = error;
    run.total_s = Some(run.submitted.elapsed().as_secs_f64());
    let files: Vec<String> = run.files.iter().map(|(n, _)| format!("/api/runs/{}/files/{n}", run.id)).collect();
    run.events.push((
        "result",
        json!({"type": "result", "status": status, "files": files, "prompts": run.prompts, "error": run.error,
               "attention": run.attention.is_some(), "seconds": run.total_s})
        .to_string(),
    ));
}

/// The progress of one run: records a step event with a preview and answers whether to go on.
struct RunProgress<'a> {
    shared: &'a Shared,
    id: &'a str,
    cancel: Arc<AtomicBool>,
}

impl Progress for RunProgress<'_> {
    fn step(&mut self, s: &Step) -> bool {
        let preview = s.preview.and_then(|p| preview_png(p.samples, p.rows, p.hw, p.channels).ok());
        let ev = json!({
            "type": "step", "stage": s.stage, "step": s.step, "total": s.total, "done": s.done, "of": s.of,
            "preview": preview.map(|b| format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(b))),
        });
        if let Some(run) = self.shared.lock().runs.get_mut(self.id) {
            run.first_step_s.get_or_insert(run.submitted.elapsed().as_secs_f64());
            run.events.push(("step", ev.to_string()));
        }
        self.shared.changed.notify_waiters();
        !self.cancel.load(Ordering::SeqCst)
    }

    fn wants_preview(&self) -> bool {
        true
    }
}

/// A preview PNG of every row side by side: pixel samples from [-1, 1], latents as their first three channels
/// stretched to their range.
pub fn preview_png(samples: &[f32], rows: usize, (h, w): (usize, usize), c: usize) -> Result<Vec<u8>> {
    let (lo, hi) = if c == 3 {
        (-1.0f32, 1.0f32)
    } else {
        samples.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)))
    };
    let span = (hi - lo).max(1e-6);
    let mut rgb = vec![0u8; h * w * rows * 3];
    for r in 0..rows {
        for y in 0..h {
            for x in 0..w {
                for k in 0..3 {
                    let v = samples[((r * h + y) * w + x) * c + k.min(c - 1)];
                    rgb[((y * rows + r) * w + x) * 3 + k] = (((v - lo) / span).clamp(0.0, 1.0) * 255.0).round() as u8;
                }
            }
        }
    }
    png(&rgb, h, w * rows)
}

/// The attention maps as JSON for the page: per row its prompt, token labels and one map per token (`res²`
/// values 0..255, each map scaled to its own maximum).
pub fn attention_json(a: &AttentionMaps, prompts: &[String]) -> Value {
    let rows: Vec<Value> = a
        .labels
        .iter()
        .enumerate()
        .map(|(b, labels)| {
            let maps: Vec<Vec<u8>> = (0..labels.len())
                .map(|n| {
                    let m = a.map(b, n);
                    let max = m.iter().cloned().fold(0.0f32, f32::max).max(1e-12);
                    m.iter().map(|v| ((v / max).clamp(0.0, 1.0) * 255.0).round() as u8).collect()
                })
                .collect();
            json!({"prompt": prompts.get(b), "labels": labels, "maps": maps})
        })
        .collect();
    json!({"res": a.res, "rows": rows})
}

/// The engine thread: runs the queued requests one at a time until the queue's sender is gone.
pub fn engine(shared: Arc<Shared>, rx: Receiver<String>) {
    while let Ok(id) = rx.recv() {
        let (request, cancel) = {
            let mut reg = shared.lock();
            let Some(run) = reg.runs.get_mut(&id) else { continue };
            if run.status != Status::Queued {
                continue;
            }
            run.status = Status::Running;
            (run.request.clone(), run.cancel.clone())
        };
        shared.changed.notify_waiters();
        let mut progress = RunProgress { shared: &shared, id: &id, cancel };
        let result = shared.session.run(&request, &mut progress).and_then(|out| {
            let files = out.files(Files::default())?;
            let attention = out.attention.as_ref().map(|a| attention_json(a, &out.prompts));
            Ok((files, attention, out.prompts))
        });
        if let Some(run) = shared.lock().runs.get_mut(&id) {
            match result {
                Ok((files, attention, prompts)) => {
                    run.files = files;
                    run.attention = attention;
                    run.prompts = prompts;
                    finish(run, Status::Done, None);
                }
                Err(Error::Cancelled) => finish(run, Status::Cancelled, Some("cancelled".into())),
                Err(e) => finish(run, Status::Failed, Some(e.to_string())),
            }
        }
        shared.changed.notify_waiters();
    }
}
