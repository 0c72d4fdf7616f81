//! A stand-in for an ad platform's HTTP API on 127.0.0.1: it records every
//! request, checks each against the platform's documented format with the
//! test's `validate` function (a request that fails it is answered 400 and
//! its problems kept, as the real platform would refuse it), and otherwise
//! answers with the next queued answer or the default one.
// Each suite that includes this file uses a part of it.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, e.g. `/mp/collect?measurement_id=G-1&api_secret=s`.
    pub target: String,
    pub content_type: Option<String>,
    /// Every header, names lowercase, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn new(status: u16, body: &str) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.into(), value.into()));
        self
    }
}

type Validate = dyn Fn(&Recorded) -> Vec<String> + Send + Sync;

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    problems: Vec<String>,
    queued: VecDeque<Answer>,
}

pub struct FakePlatform {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakePlatform {
    pub async fn start(
        default: Answer,
        validate: impl Fn(&Recorded) -> Vec<String> + Send + Sync + 'static,
    ) -> FakePlatform {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let validate: Arc<Validate> = Arc::new(validate);
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                let validate = validate.clone();
                let default = default.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        let validate = validate.clone();
                        let default = default.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await?.to_bytes().to_vec();
                            let recorded = Recorded {
                                method: parts.method.to_string(),
                                target: parts
                                    .uri
                                    .path_and_query()
                                    .map(|p| p.to_string())
                                    .unwrap_or_default(),
                                content_type: parts
                                    .headers
                                    .get("content-type")
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_string),
                                headers: parts
                                    .headers
                                    .iter()
                                    .map(|(k, v)| {
                                        (
                                            k.as_str().to_string(),
                                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                        )
                                    })
                                    .collect(),
                                body,
                            };
                            let problems = validate(&recorded);
                            let answer = {
                                let mut s = state.lock().unwrap();
                                s.requests.push(recorded);
                                if problems.is_empty() {
                                    s.queued.pop_front().unwrap_or(default)
                                } else {
                                    let message = problems.join("; ");
                                    s.problems.extend(problems);
                                    Answer::new(
                                        400,
                                        &serde_json::json!({"error": {"message": message, "code": 100}}).to_string(),
                                    )
                                }
                            };
                            let mut response = Response::builder().status(answer.status);
                            for (k, v) in &answer.headers {
                                response = response.header(k, v);
                            }
                            Ok::<_, hyper::Error>(
                                response.body(Full::new(Bytes::from(answer.body))).unwrap(),
                            )
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakePlatform { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answer the next valid request with `answer` instead of the default.
    pub fn queue(&self, answer: Answer) {
        self.state.lock().unwrap().queued.push_back(answer);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Every format problem found so far, across all requests.
    pub fn problems(&self) -> Vec<String> {
        self.state.lock().unwrap().problems.clone()
    }
}

impl Drop for FakePlatform {
    fn drop(&mut self) {
        self.task.abort();
    }
}
