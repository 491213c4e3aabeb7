//! A stand-in Kubernetes API server (none is installable here): list and
//! watch of pods, Services and EndpointSlices as the real one serves them
//! (list pages with `limit`/`continue` and `metadata.resourceVersion`;
//! watch as chunked lines of `{"type", "object"}`, BOOKMARK events, an ERROR
//! event with a 410 Status for a resourceVersion compacted away, the watch
//! ended after `timeoutSeconds`). Objects come from recorded responses
//! (tests/fixtures/k8s/*.json).
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::{TcpListener, TcpStream},
    sync::{Arc, Condvar, Mutex},
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

/// A recorded object, to be changed with [`set`] before it is applied.
pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/k8s/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

/// `v` with the value at each JSON pointer replaced.
pub fn set(mut v: Value, changes: &[(&str, Value)]) -> Value {
    for (pointer, value) in changes {
        *v.pointer_mut(pointer).unwrap_or_else(|| panic!("no {pointer} in the fixture")) = value.clone();
    }
    v
}

#[derive(Default)]
struct State {
    rv: u64,
    /// (collection path, namespace, name) → object.
    objects: BTreeMap<(String, String, String), Value>,
    /// (rv, collection path, event type, object), oldest first.
    history: Vec<(u64, String, &'static str, Value)>,
    /// Watches from a resourceVersion below this get 410 Gone.
    oldest: u64,
    requests: Vec<String>,
    /// Lists in pages: each list's items and resourceVersion as of its first
    /// page, as the real server keeps a consistent snapshot behind `continue`.
    snapshots: Vec<(u64, Vec<Value>)>,
}

pub struct KubeApi {
    pub url: String,
    state: Arc<(Mutex<State>, Condvar)>,
}

/// Where a kind is listed and watched.
fn collection(kind: &str) -> &'static str {
    match kind {
        "Pod" => "/api/v1/pods",
        "Service" => "/api/v1/services",
        "EndpointSlice" => "/apis/discovery.k8s.io/v1/endpointslices",
        other => panic!("the stand-in serves no {other}"),
    }
}

impl KubeApi {
    pub fn start() -> KubeApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state: Arc<(Mutex<State>, Condvar)> = Default::default();
        state.0.lock().unwrap().rv = 1000;
        let shared = state.clone();
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let state = shared.clone();
                thread::spawn(move || serve(conn, &state));
            }
        });
        KubeApi { url, state }
    }

    /// Creates or replaces an object (ADDED or MODIFIED to watchers).
    pub fn apply(&self, mut obj: Value) {
        let (lock, changed) = &*self.state;
        let mut s = lock.lock().unwrap();
        s.rv += 1;
        let rv = s.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let path = collection(obj["kind"].as_str().expect("kind")).to_string();
        let key = (path.clone(), str_at(&obj, "/metadata/namespace"), str_at(&obj, "/metadata/name"));
        let kind = if s.objects.insert(key, obj.clone()).is_some() { "MODIFIED" } else { "ADDED" };
        s.history.push((rv, path, kind, obj));
        changed.notify_all();
    }

    /// Deletes an object (DELETED to watchers).
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) {
        let (lock, changed) = &*self.state;
        let mut s = lock.lock().unwrap();
        let path = collection(kind).to_string();
        let mut obj = s.objects.remove(&(path.clone(), namespace.into(), name.into())).expect("deleting what exists");
        s.rv += 1;
        let rv = s.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        s.history.push((rv, path, "DELETED", obj));
        changed.notify_all();
    }

    /// Forgets the history (etcd compaction): a watch resuming from before
    /// now gets 410 Gone and its client must list again.
    pub fn compact(&self) {
        let (lock, changed) = &*self.state;
        let mut s = lock.lock().unwrap();
        s.history.clear();
        s.oldest = s.rv + 1;
        changed.notify_all();
    }

    /// The server restored from an older backup: its resourceVersion goes
    /// back by `by` and its history is gone.
    pub fn rewind(&self, by: u64) {
        let (lock, changed) = &*self.state;
        let mut s = lock.lock().unwrap();
        s.history.clear();
        s.rv -= by;
        s.oldest = s.rv + 1;
        changed.notify_all();
    }

    /// Request lines (path and query) served so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.0.lock().unwrap().requests.clone()
    }
}

fn str_at(v: &Value, pointer: &str) -> String {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn query<'a>(q: &'a str, key: &str) -> Option<&'a str> {
    q.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// `spec.nodeName=X` (percent-encoded or not), the only selector kube sends here.
fn selects(selector: Option<&str>, obj: &Value) -> bool {
    let Some(sel) = selector else { return true };
    let sel = sel.replace("%3D", "=").replace("%3d", "=");
    match sel.split_once('=') {
        Some(("spec.nodeName", node)) => obj.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node),
        _ => panic!("unexpected selector {sel}"),
    }
}

fn serve(conn: TcpStream, state: &(Mutex<State>, Condvar)) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut w = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                break;
            }
        }
        let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        state.0.lock().unwrap().requests.push(target.clone());
        let (path, q) = target.split_once('?').unwrap_or((&target, ""));
        let result = if query(q, "watch") == Some("true") || query(q, "watch") == Some("1") {
            watch(&mut w, state, path, q).map(|_| false)
        } else {
            list(&mut w, state, path, q).map(|_| true)
        };
        match result {
            Ok(true) => continue,
            _ => return,
        }
    }
}

fn list(w: &mut TcpStream, state: &(Mutex<State>, Condvar), path: &str, q: &str) -> std::io::Result<()> {
    let mut s = state.0.lock().unwrap();
    let selector = query(q, "fieldSelector");
    // `continue` = "<snapshot>-<offset>".
    let token = query(q, "continue")
        .and_then(|c| c.split_once('-'))
        .and_then(|(i, o)| Some((i.parse().ok()?, o.parse().ok()?)));
    let (id, from): (usize, usize) = match token {
        Some(t) => t,
        None => {
            let all: Vec<Value> = s
                .objects
                .iter()
                .filter(|((p, _, _), o)| p == path && selects(selector, o))
                .map(|(_, o)| {
                    // A list's items carry no kind or apiVersion.
                    let mut o = o.clone();
                    o.as_object_mut().unwrap().retain(|k, _| k != "kind" && k != "apiVersion");
                    o
                })
                .collect();
            let rv = s.rv;
            s.snapshots.push((rv, all));
            (s.snapshots.len() - 1, 0)
        }
    };
    let limit: usize = query(q, "limit").and_then(|l| l.parse().ok()).unwrap_or(usize::MAX);
    let (rv, all) = &s.snapshots[id];
    let page: Vec<Value> = all.iter().skip(from).take(limit).cloned().collect();
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if from + page.len() < all.len() {
        meta["continue"] = json!(format!("{id}-{}", from + page.len()));
    }
    let kind = match path {
        "/api/v1/pods" => "PodList",
        "/api/v1/services" => "ServiceList",
        _ => "EndpointSliceList",
    };
    let api_version = if path.starts_with("/apis/") { "discovery.k8s.io/v1" } else { "v1" };
    drop(s);
    let body = serde_json::to_vec(&json!({"kind": kind, "apiVersion": api_version, "metadata": meta, "items": page}))?;
    write!(w, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len())?;
    w.write_all(&body)?;
    w.flush()
}

fn chunk(w: &mut TcpStream, line: &Value) -> std::io::Result<()> {
    let mut data = serde_json::to_vec(line)?;
    data.push(b'\n');
    write!(w, "{:x}\r\n", data.len())?;
    w.write_all(&data)?;
    w.write_all(b"\r\n")?;
    w.flush()
}

fn watch(w: &mut TcpStream, state: &(Mutex<State>, Condvar), path: &str, q: &str) -> std::io::Result<()> {
    let (lock, changed) = state;
    let mut from: u64 = query(q, "resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
    let selector = query(q, "fieldSelector").map(String::from);
    let bookmarks = query(q, "allowWatchBookmarks") == Some("true");
    let ends =
        Instant::now() + Duration::from_secs(query(q, "timeoutSeconds").and_then(|t| t.parse().ok()).unwrap_or(60));
    w.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")?;
    let kind = match path {
        "/api/v1/pods" => ("Pod", "v1"),
        "/api/v1/services" => ("Service", "v1"),
        _ => ("EndpointSlice", "discovery.k8s.io/v1"),
    };
    let mut last_bookmark = Instant::now();
    loop {
        let mut s = lock.lock().unwrap();
        // Compacted away, or newer than this server knows (restored from a
        // backup: its resourceVersion went back): the client must list again.
        if from + 1 < s.oldest || from > s.rv {
            drop(s);
            let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": format!("too old resource version: {from}"), "reason": "Expired", "code": 410}});
            chunk(w, &gone)?;
            return w.write_all(b"0\r\n\r\n");
        }
        let events: Vec<(u64, &'static str, Value)> = s
            .history
            .iter()
            .filter(|(rv, p, _, o)| *rv > from && p == path && selects(selector.as_deref(), o))
            .map(|(rv, _, t, o)| (*rv, *t, o.clone()))
            .collect();
        let now_rv = s.rv;
        if events.is_empty() {
            let (guard, _) = changed.wait_timeout(s, Duration::from_millis(500)).unwrap();
            s = guard;
        }
        drop(s);
        for (rv, kind, obj) in events {
            chunk(w, &json!({"type": kind, "object": obj}))?;
            from = rv;
        }
        if bookmarks && last_bookmark.elapsed() >= Duration::from_secs(1) {
            last_bookmark = Instant::now();
            from = from.max(now_rv);
            chunk(
                w,
                &json!({"type": "BOOKMARK", "object": {"kind": kind.0, "apiVersion": kind.1,
                "metadata": {"resourceVersion": from.to_string()}}}),
            )?;
        }
        if Instant::now() >= ends {
            return w.write_all(b"0\r\n\r\n");
        }
    }
}
