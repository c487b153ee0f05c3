//! `p2p-wgpu serve` over real HTTP on the tiny SD fixture: a run end to end (server-sent events in order, one per
//! UNet evaluation, then the result; its files and attention maps), every kind of bad request answered 400 with
//! the CLI's message, an oversized body 413, cancel (queued and running) freeing the engine for the next run, a
//! full queue 429, the token check, a dropped event stream that does not stop its run, and embedded assets that
//! name no other origin.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct KillOnPanic(u32);

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.to_string()).status();
    }
}

fn serve(extra: &[&str]) -> Server {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sd1-tiny");
    let mut child = Command::new(env!("CARGO_BIN_EXE_p2p-wgpu"))
        .args(["serve", "--model", model, "--listen", "127.0.0.1:0"])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start p2p-wgpu serve");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    // The server is killed on drop from here on, even if reading its address fails.
    let pid = child.id();
    let guard = KillOnPanic(pid);
    let mut line = String::new();
    let port = loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "serve ended before listening");
        if let Some(rest) = line.split("http://127.0.0.1:").nth(1) {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            break digits.parse().expect("port");
        }
    };
    std::mem::forget(guard);
    // Keep draining stderr so that the server never blocks on it.
    std::thread::spawn(move || for _ in err.lines() {});
    Server { child, port }
}

/// One HTTP/1.1 request; returns (status, headers, body).
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    s.write_all(req.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, head, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(nl) = b.windows(2).position(|w| w == b"\r\n") else { return out };
        let n = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap().trim(), 16).unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[nl + 2 + n + 2..];
    }
}

fn json_of(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(b)))
}

fn post(port: u16, body: &Value) -> (u16, Value) {
    let (s, _, b) =
        http(port, "POST", "/api/runs", &[("Content-Type", "application/json")], body.to_string().as_bytes());
    (s, json_of(&b))
}

fn get(port: u16, path: &str) -> (u16, Value) {
    let (s, _, b) = http(port, "GET", path, &[], b"");
    (s, json_of(&b))
}

/// The events of a run as (name, data), read until the result (or after `stop_after` events, dropping the stream).
fn events(port: u16, id: &str, stop_after: Option<usize>) -> Vec<(String, Value)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(s, "GET /api/runs/{id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let (mut out, mut name, mut line) = (Vec::new(), String::new(), String::new());
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            return out;
        }
        let l = line.trim_end();
        if let Some(n) = l.strip_prefix("event: ") {
            name = n.to_string();
        } else if let Some(d) = l.strip_prefix("data: ") {
            out.push((name.clone(), serde_json::from_str(d).unwrap()));
            if name == "result" || stop_after == Some(out.len()) {
                return out;
            }
        }
    }
}

fn wait_status(port: u16, id: &str, want: &str) -> Value {
    let t = Instant::now();
    loop {
        let (_, r) = get(port, &format!("/api/runs/{id}"));
        if r["status"] == want {
            return r;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "run {id} never became {want}: {r}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn edit(steps: usize) -> Value {
    json!({"prompt": "a red bicycle on a hill", "swap": ["bicycle=car"], "steps": steps, "scheduler": "ddim", "seed": 3})
}

#[test]
fn a_run_streams_one_event_per_step_then_its_files() {
    let srv = serve(&[]);
    let (s, run) = post(srv.port, &edit(4));
    assert_eq!(s, 201, "{run}");
    let id = run["id"].as_str().unwrap();
    assert_eq!(id.len(), 32, "run ids are 128 random bits");
    let ev = events(srv.port, id, None);
    let steps: Vec<&Value> = ev.iter().filter(|(n, _)| n == "step").map(|(_, d)| d).collect();
    assert_eq!(steps.len(), 4, "{ev:?}");
    for (k, s) in steps.iter().enumerate() {
        assert_eq!(s["done"], k + 1);
        assert_eq!(s["of"], 4);
        assert!(s["preview"].as_str().unwrap().starts_with("data:image/png;base64,"));
    }
    let (name, result) = ev.last().unwrap();
    assert_eq!(name, "result");
    assert_eq!(result["status"], "done", "{result}");
    let files: Vec<&str> = result["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert!(files.iter().any(|f| f.ends_with("/source.png")) && files.iter().any(|f| f.ends_with("/edit.png")));
    let (s, head, png) = http(srv.port, "GET", files[0], &[], b"");
    assert_eq!(s, 200);
    assert!(head.contains("image/png") && png.starts_with(b"\x89PNG"), "{head}");
    let src = http(srv.port, "GET", &format!("/api/runs/{id}/files/source.png"), &[], b"").2;
    let edit_png = http(srv.port, "GET", &format!("/api/runs/{id}/files/edit.png"), &[], b"").2;
    assert_ne!(src, edit_png, "the edit equals the source");
    let (s, a) = get(srv.port, &format!("/api/runs/{id}/attention"));
    assert_eq!(s, 200);
    assert_eq!(a["rows"].as_array().unwrap().len(), 2);
    assert_eq!(a["rows"][0]["labels"][3], "bicycle");
    let (_, list) = get(srv.port, "/api/runs");
    assert_eq!(list["runs"][0]["id"], id);
    // Events of a finished run are replayed whole.
    assert_eq!(events(srv.port, id, None).len(), 5);
}

#[test]
fn bad_requests_get_the_cli_message() {
    let srv = serve(&[]);
    let p = srv.port;
    let cases = [
        (json!({"prompt": "a red bicycle", "swap": ["zebra=horse"]}), "\"zebra\" is not a word of the prompt"),
        (json!({"prompt": "a red bicycle", "colour": 1}), "unknown field `colour`"),
        (json!({"prompt": "a red bicycle", "reweight": ["red=nan"]}), "--reweight"),
        (json!({"prompt": "a red bicycle", "steps": 0}), "--steps"),
        (json!({"prompt": "a red bicycle", "swap": ["red=blue"], "cross_steps": "abc"}), "cross"),
        (json!({"prompt": "a red bicycle", "height": 17}), "height"),
        (json!({"prompt": "a red bicycle", "scheduler": "magic"}), "scheduler \"magic\""),
        (json!({"prompt": "a red bicycle", "blend": "red"}), "need an edit"),
    ];
    for (body, needle) in cases {
        let (s, r) = post(p, &body);
        assert_eq!(s, 400, "{body}: {r}");
        let msg = r["error"].as_str().unwrap();
        assert!(msg.contains(needle) && !msg.contains('\n'), "{body}: {msg:?} does not say {needle:?}");
    }
    let (s, _, b) = http(p, "POST", "/api/runs", &[], b"{not json");
    assert_eq!(s, 400, "{}", String::from_utf8_lossy(&b));
    let big = vec![b' '; 33 << 20];
    let (s, _, _) = http(p, "POST", "/api/runs", &[("Content-Type", "application/json")], &big);
    assert_eq!(s, 413);
    assert_eq!(get(p, "/api/runs/0123456789abcdef0123456789abcdef").0, 404);
    assert_eq!(get(p, "/api/tokens").0, 400);
    let (s, t) = get(p, "/api/tokens?text=a%20red%20bicycle");
    assert_eq!((s, t["prompt_words"].clone()), (200, json!(["a", "red", "bicycle"])));
    // Nothing was queued by the refusals.
    assert_eq!(get(p, "/api/runs").1["runs"].as_array().unwrap().len(), 0);
}

#[test]
fn cancel_frees_the_engine_and_a_full_queue_answers_429() {
    let srv = serve(&[]);
    let p = srv.port;
    let (_, long) = post(p, &edit(500));
    let long = long["id"].as_str().unwrap().to_string();
    wait_status(p, &long, "running");
    let mut queued = Vec::new();
    for _ in 0..4 {
        let (s, r) = post(p, &edit(2));
        assert_eq!(s, 201, "{r}");
        queued.push(r["id"].as_str().unwrap().to_string());
    }
    let (s, r) = post(p, &edit(2));
    assert_eq!(s, 429, "{r}");
    assert!(r["error"].as_str().unwrap().contains("queue is full"));
    // A queued run is cancelled at once, the running one at its next step; the next queued run then completes.
    assert_eq!(http(p, "DELETE", &format!("/api/runs/{}", queued[0]), &[], b"").0, 200);
    assert_eq!(get(p, &format!("/api/runs/{}", queued[0])).1["status"], "cancelled");
    let _ = http(p, "DELETE", &format!("/api/runs/{long}"), &[], b"");
    let ev = events(p, &long, None);
    assert_eq!(ev.last().unwrap().1["status"], "cancelled");
    assert!(ev.len() < 500, "the cancelled run went on");
    wait_status(p, &queued[1], "done");
}

#[test]
fn a_dropped_event_stream_does_not_stop_its_run() {
    let srv = serve(&[]);
    let (_, r) = post(srv.port, &edit(6));
    let id = r["id"].as_str().unwrap();
    let first = events(srv.port, id, Some(1));
    assert_eq!(first.len(), 1);
    let done = wait_status(srv.port, id, "done");
    assert_eq!(done["steps"], 6);
}

#[test]
fn the_token_is_required_when_set() {
    let srv = serve(&["--token", "s3cret-token"]);
    let p = srv.port;
    let (s, r) = get(p, "/api/info");
    assert_eq!(s, 401, "{r}");
    assert_eq!(http(p, "GET", "/", &[], b"").0, 401);
    assert_eq!(http(p, "GET", "/api/info", &[("X-P2P-Token", "s3cret-token")], b"").0, 200);
    assert_eq!(http(p, "GET", "/api/info", &[("Authorization", "Bearer s3cret-token")], b"").0, 200);
    assert_eq!(http(p, "GET", "/api/info", &[("X-P2P-Token", "wrong-token!")], b"").0, 401);
    let (s, head, _) = http(p, "GET", "/?token=s3cret-token", &[], b"");
    assert_eq!(s, 200);
    assert!(head.to_ascii_lowercase().contains("set-cookie: p2p_token=s3cret-token"), "{head}");
    assert_eq!(http(p, "GET", "/api/runs", &[("Cookie", "p2p_token=s3cret-token")], b"").0, 200);
}

#[test]
fn the_page_needs_no_other_origin() {
    use p2p_wgpu::app::serve::api::{APP_JS, INDEX_HTML, STYLE_CSS};
    for (name, text) in [("index.html", INDEX_HTML), ("app.js", APP_JS), ("style.css", STYLE_CSS)] {
        for scheme in ["http://", "https://", "//cdn", "ws://", "wss://"] {
            assert!(!text.contains(scheme), "{name} names another origin ({scheme})");
        }
    }
    let srv = serve(&[]);
    let (s, head, body) = http(srv.port, "GET", "/", &[], b"");
    assert_eq!(s, 200);
    assert!(head.contains("text/html"));
    let body = String::from_utf8(body).unwrap();
    for asset in ["/app.js", "/style.css"] {
        assert!(body.contains(asset));
        assert_eq!(http(srv.port, "GET", asset, &[], b"").0, 200, "{asset}");
    }
}

#[test]
fn an_uploaded_picture_is_edited_from_its_inversion() {
    let srv = serve(&[]);
    let p = srv.port;
    let png = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/inversion/input.png")).unwrap();
    let (s, _, b) = http(p, "POST", "/api/images", &[("Content-Type", "image/png")], &png);
    let up = json_of(&b);
    assert_eq!(s, 201, "{up}");
    let id = up["id"].as_str().unwrap();
    let (s, head, back) = http(p, "GET", &format!("/api/images/{id}"), &[], b"");
    assert!(s == 200 && head.contains("image/png") && back.starts_with(b"\x89PNG"));
    let req = json!({"prompt": "a red bicycle on a hill", "swap": ["bicycle=car"], "steps": 2, "upload": id});
    let (s, run) = post(p, &req);
    assert_eq!(s, 201, "{run}");
    assert_eq!(run["upload"], id);
    assert!(run["request"]["image"].is_null(), "the summary carries the picture's bytes");
    let ev = events(p, run["id"].as_str().unwrap(), None);
    let result = &ev.last().unwrap().1;
    assert_eq!(result["status"], "done", "{result}");
    let files: Vec<&str> = result["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert!(files.iter().any(|f| f.ends_with("/input.png")), "{files:?}");
    // Refusals: not a picture, an unknown upload, a seed with a picture.
    let (s, _, b) = http(p, "POST", "/api/images", &[], b"not a picture at all");
    assert_eq!(s, 400, "{}", String::from_utf8_lossy(&b));
    let (s, r) = post(p, &json!({"prompt": "a red bicycle", "upload": "0123456789abcdef0123456789abcdef"}));
    assert!(s == 400 && r["error"].as_str().unwrap().contains("no uploaded picture"), "{r}");
    let (s, r) = post(p, &json!({"prompt": "a red bicycle on a hill", "upload": id, "seed": 1}));
    assert!(s == 400 && r["error"].as_str().unwrap().contains("--seed"), "{r}");
}
