//! The HTTP side of `serve`: the embedded page, the JSON API and the server-sent events (axum). Every error is
//! `{"error": "<the CLI's one-line message>"}` with a status saying whose fault it is: 400 for a bad request,
//! 401 without the token, 404 for an unknown run or file, 413 for a body over the cap (axum's limit), 429 when
//! the queue is full, 500 for the engine.
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request as HttpRequest, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::runs::Shared;
use crate::error::{Error, Fault};
use crate::session::Request;
use crate::text::TokenReport;

/// The largest request body (JSON; a picture inline as data fits).
pub const MAX_BODY: usize = 32 << 20;

pub const INDEX_HTML: &str = include_str!("page/index.html");
pub const APP_JS: &str = include_str!("page/app.js");
pub const STYLE_CSS: &str = include_str!("page/style.css");

#[derive(Clone)]
pub struct App {
    pub shared: Arc<Shared>,
    pub token: Option<String>,
    /// What the page shows about the model and adapter, and the defaults it starts from.
    pub info: Value,
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({"error": message.to_string()}))).into_response()
}

fn engine_error(e: Error) -> Response {
    let status = match e.fault() {
        Fault::User => StatusCode::BAD_REQUEST,
        Fault::Cancelled => StatusCode::CONFLICT,
        Fault::Engine => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e)
}

/// The router of the whole server.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], APP_JS) }))
        .route("/style.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE_CSS) }))
        .route("/api/info", get(info))
        .route("/api/tokens", get(tokens))
        .route("/api/runs", get(list).post(submit))
        .route("/api/images", axum::routing::post(upload))
        .route("/api/images/{id}", get(picture))
        .route("/api/runs/{id}", get(show).delete(cancel))
        .route("/api/runs/{id}/events", get(events))
        .route("/api/runs/{id}/files/{name}", get(file))
        .route("/api/runs/{id}/attention", get(attention))
        .layer(middleware::from_fn_with_state(app.clone(), auth))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

/// With `--token`: every path needs it as `Authorization: Bearer T`, `X-P2P-Token: T` or the cookie
/// `p2p_token=T`; `/?token=T` sets the cookie (so the page can be opened from a link).
async fn auth(State(app): State<App>, req: HttpRequest, next: Next) -> Response {
    let Some(token) = app.token.as_deref() else { return next.run(req).await };
    let h = req.headers();
    let bearer = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let x = h.get("x-p2p-token").and_then(|v| v.to_str().ok());
    let cookie = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("p2p_token="));
    let query = req.uri().query().unwrap_or("").split('&').find_map(|kv| kv.strip_prefix("token="));
    let ok = |t: Option<&str>| t.is_some_and(|t| t.as_bytes() == token.as_bytes());
    if ok(bearer) || ok(x) || ok(cookie) {
        return next.run(req).await;
    }
    if req.uri().path() == "/" && ok(query) {
        let mut resp = next.run(req).await;
        let c = format!("p2p_token={token}; Path=/; HttpOnly; SameSite=Strict");
        if let Ok(v) = HeaderValue::from_str(&c) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
        return resp;
    }
    error(StatusCode::UNAUTHORIZED, "this server needs its token (--token): open /?token=TOKEN or send X-P2P-Token")
}

async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], INDEX_HTML)
        .into_response()
}

async fn info(State(app): State<App>) -> Response {
    axum::Json(app.info.clone()).into_response()
}

async fn tokens(State(app): State<App>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(text) = q.get("text") else { return error(StatusCode::BAD_REQUEST, "tokens: give ?text=PROMPT") };
    match TokenReport::new(app.shared.session.tokenizer(), text) {
        Ok(r) => ([(header::CONTENT_TYPE, "application/json")], r.to_json()).into_response(),
        Err(e) => engine_error(e),
    }
}

/// Parses and checks a request body exactly as the command line checks its flags (`Request::validate`, then
/// `Session::check`: words, sizes, steps against the loaded model), and fills in what the server decides: the
/// uploaded picture named by `"upload": ID` (a request names no file), a seed when none is given (reported back),
/// and the attention maps of an edit for the page. Returns the request, its upload id and its prompts.
pub fn checked_request(app: &App, body: &[u8]) -> Result<(Request, Option<String>, Vec<String>), Error> {
    let text = std::str::from_utf8(body).map_err(|_| Error::input("request: the body is not UTF-8 JSON"))?;
    let mut v: Value = serde_json::from_str(text).map_err(|e| Error::input(format!("request: {e}")))?;
    let upload = match v.as_object_mut().and_then(|m| m.remove("upload")) {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(id),
        Some(other) => {
            return Err(Error::input(format!("request: upload must be the id of an uploaded picture, got {other}")));
        }
    };
    let mut req: Request = serde_json::from_value(v).map_err(|e| Error::input(format!("request: {e}")))?;
    if let Some(id) = &upload {
        let p = app.shared.picture(id).ok_or_else(|| {
            Error::input(format!(
                "no uploaded picture {id:?} (the newest {} are kept); upload it again",
                super::runs::MAX_UPLOADS
            ))
        })?;
        req.image = Some(p);
    }
    // `check` validates the request (`Request::validate`) and checks it against the model.
    app.shared.session.check(&req)?;
    if req.seed.is_none() && req.latents.is_none() && !req.is_real_image() {
        req.seed = Some(crate::session::random_seed() % (1 << 32));
    }
    // The page's attention overlays (the engine keeps maps for edits only).
    req.attention = req.is_edit();
    let prompts = app.shared.session.plan(&req)?.map_or_else(|| vec![req.prompt.clone()], |p| p.prompts);
    Ok((req, upload, prompts))
}

async fn submit(State(app): State<App>, body: Bytes) -> Response {
    let (req, upload, prompts) = match checked_request(&app, &body) {
        Ok(x) => x,
        Err(e) => return engine_error(e),
    };
    match app.shared.submit(req, upload, prompts) {
        Ok(id) => {
            let run = app.shared.lock().runs.get(&id).map(|r| r.summary());
            (StatusCode::CREATED, axum::Json(run.unwrap_or(json!({"id": id})))).into_response()
        }
        Err(None) => error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("the queue is full ({} runs waiting); try again when one has finished", super::runs::QUEUE),
        ),
        Err(Some(e)) => engine_error(e),
    }
}

/// `POST /api/images`: a picture file's bytes (PNG, JPEG or WebP), decoded and checked as `--image` is; answers
/// its id, which a request names as `"upload": ID`.
async fn upload(State(app): State<App>, body: Bytes) -> Response {
    let picture = match crate::input_image::decode("the uploaded picture", &body) {
        Ok(p) => p,
        Err(e) => return engine_error(e),
    };
    let (w, h) = (picture.width, picture.height);
    match app.shared.upload(picture) {
        Ok(id) => (StatusCode::CREATED, axum::Json(json!({"id": id, "width": w, "height": h}))).into_response(),
        Err(e) => engine_error(e),
    }
}

/// `GET /api/images/{id}`: an uploaded picture as PNG.
async fn picture(State(app): State<App>, Path(id): Path<String>) -> Response {
    let Some(p) = app.shared.picture(&id) else {
        return error(StatusCode::NOT_FOUND, format!("no uploaded picture {id:?}"));
    };
    match crate::output::png(&p.rgb, p.height as usize, p.width as usize) {
        Ok(b) => ([(header::CONTENT_TYPE, "image/png")], b).into_response(),
        Err(e) => engine_error(e),
    }
}

async fn list(State(app): State<App>) -> Response {
    let runs: Vec<Value> = app.shared.lock().newest_first().map(|r| r.summary()).collect();
    axum::Json(json!({ "runs": runs })).into_response()
}

fn no_run(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no run {id:?} (finished runs are kept until {} newer ones)", super::runs::MAX_KEPT),
    )
}

async fn show(State(app): State<App>, Path(id): Path<String>) -> Response {
    match app.shared.lock().runs.get(&id) {
        Some(r) => axum::Json(r.summary()).into_response(),
        None => no_run(&id),
    }
}

async fn cancel(State(app): State<App>, Path(id): Path<String>) -> Response {
    match app.shared.cancel(&id) {
        Some(s) => axum::Json(json!({"id": id, "status": s, "cancel": true})).into_response(),
        None => no_run(&id),
    }
}

async fn file(State(app): State<App>, Path((id, name)): Path<(String, String)>) -> Response {
    let reg = app.shared.lock();
    let Some(run) = reg.runs.get(&id) else { return no_run(&id) };
    let Some((_, bytes)) = run.files.iter().find(|(n, _)| *n == name) else {
        return error(StatusCode::NOT_FOUND, format!("run {id} has no file {name:?}"));
    };
    let kind = if name.ends_with(".png") { "image/png" } else { "application/octet-stream" };
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    (h, bytes.clone()).into_response()
}

async fn attention(State(app): State<App>, Path(id): Path<String>) -> Response {
    let reg = app.shared.lock();
    let Some(run) = reg.runs.get(&id) else { return no_run(&id) };
    match &run.attention {
        Some(a) => axum::Json(a.clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("run {id} has no attention maps (yet)")),
    }
}

/// Server-sent events of a run: every event so far, then each new one, ending after the `result` event. A client
/// that goes away only drops its stream; the run goes on.
async fn events(State(app): State<App>, Path(id): Path<String>) -> Response {
    if !app.shared.lock().runs.contains_key(&id) {
        return no_run(&id);
    }
    let shared = app.shared.clone();
    let stream = futures_util::stream::unfold((shared, id, 0usize, false), |(shared, id, next, ended)| async move {
        if ended {
            return None;
        }
        loop {
            let notified = shared.changed.notified();
            {
                let reg = shared.lock();
                let run = reg.runs.get(&id)?;
                if let Some((kind, data)) = run.events.get(next) {
                    let last = *kind == "result";
                    let e: Result<Event, Infallible> = Ok(Event::default().event(*kind).data(data.clone()));
                    return Some((e, (shared.clone(), id.clone(), next + 1, last)));
                }
            }
            notified.await;
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}
