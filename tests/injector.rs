//! `touchgate injector`: the real binary on 127.0.0.1 with a throwaway
//! certificate, answering the AdmissionReview fixtures of
//! tests/fixtures/injector/ as the API server would send them. The patch it
//! returns, applied to the pod with a JSON-patch library, must give exactly
//! the pod `touchgate inject` writes for the same pod; the patched pods are
//! golden files (`*.patched.json`) that `.ci/run` also validates against the
//! Kubernetes schemas. Hostile input gets its status and leaves the process
//! serving; a rotated certificate is picked up by new connections.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use touchgate::cli::inject::{AppPort, InjectOptions, inject};

const IMAGE: &str = "ghcr.io/touchgate/touchgate:test";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/injector")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(format!("{name}.json"))).unwrap()
}

/// A CA and a server certificate for `localhost` it signed, as cert-manager
/// issues them.
struct Pki {
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new() -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = ca_params().self_signed(&ca_key).unwrap();
        Pki { ca, ca_key }
    }

    /// Write a fresh server certificate and key to `dir`, by rename as the
    /// kubelet swaps a Secret's files; its DER is returned.
    fn issue(&self, dir: &Path, serial: u64) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params
            .signed_by(&key, &rcgen::Issuer::new(ca_params(), &self.ca_key))
            .unwrap();
        for (name, text) in [("tls.key", key.serialize_pem()), ("tls.crt", cert.pem())] {
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, dir.join(name)).unwrap();
        }
        cert.der().to_vec()
    }

    fn client(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }
}

fn ca_params() -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "touchgate-injector-ca");
    params
}

/// The injector process; killed when dropped.
struct Injector {
    child: Child,
    addr: SocketAddr,
    tls: TlsConnector,
    _dir: tempfile::TempDir,
    dir: PathBuf,
    pki: Pki,
}

impl Drop for Injector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> Injector {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let pki = Pki::new();
    pki.issue(&dir, 1);
    let mut child = Command::new(env!("CARGO_BIN_EXE_touchgate"))
        .args([
            "--log-format",
            "json",
            "injector",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--tls-cert")
        .arg(dir.join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.join("tls.key"))
        .args(["--image", IMAGE])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the injector exited: {:?}", child.try_wait()))
            .unwrap();
        let Ok(log) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if log["message"] == "injector serving" {
            break log["listen"].as_str().unwrap().parse().unwrap();
        }
    };
    // Keep draining its log so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let tls = pki.client();
    Injector {
        child,
        addr,
        tls,
        _dir: tmp,
        dir,
        pki,
    }
}

impl Injector {
    async fn connect(&self) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        self.tls
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    /// One request on a new connection: status and body.
    async fn request(&self, method: &str, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        let tls = self.connect().await;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, body)
    }

    async fn healthy(&self) -> bool {
        self.request("GET", "/healthz", Vec::new()).await == (200, b"ok\n".to_vec())
    }

    /// The AdmissionReview the injector answers to `body`.
    async fn review(&self, body: Vec<u8>) -> Value {
        let (status, answer) = self.request("POST", "/mutate", body).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        serde_json::from_slice(&answer).unwrap()
    }
}

/// The pod of a review with the answer's patch applied; `None` without one.
fn patched(review: &Value, answer: &Value) -> Option<Value> {
    let response = &answer["response"];
    let patch = response.get("patch")?.as_str()?;
    assert_eq!(response["patchType"], "JSONPatch");
    let ops: json_patch::Patch = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(patch)
            .unwrap(),
    )
    .unwrap();
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &ops).unwrap();
    Some(pod)
}

/// What `touchgate inject` writes for the review's pod (JSON is YAML),
/// read back with a YAML library that shares no code with touchgate's.
fn injected_by_cli(review: &Value, options: &InjectOptions) -> Value {
    let pod = serde_json::to_string(&review["request"]["object"]).unwrap();
    let out = inject(&pod, options).unwrap();
    let yaml: serde_norway::Value = serde_norway::from_str(&out).unwrap();
    serde_json::to_value(yaml).unwrap()
}

fn assert_allowed(review: &Value, answer: &Value) {
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
    assert_eq!(answer["response"]["allowed"], true);
}

/// Compare with, or with UPDATE_GOLDEN set write, `NAME.FORM.patched.json`.
fn golden(name: &str, form: &str, pod: &Value) -> Option<String> {
    let path = fixtures().join(format!("{name}.{form}.patched.json"));
    let actual = serde_json::to_string_pretty(pod).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).unwrap();
        return None;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    (expected != actual).then(|| format!("{} differs from the patched pod", path.display()))
}

#[tokio::test]
async fn the_patch_gives_what_inject_gives_for_the_same_pod() {
    for (form, classic) in [("native", false), ("classic", true)] {
        let injector = start(if classic { &["--classic"] } else { &[] });
        let mut failures = Vec::new();
        for name in [
            "deployment-named-port",
            "numeric-port",
            "multiple-containers",
        ] {
            let review: Value = serde_json::from_slice(&fixture(name)).unwrap();
            let answer = injector.review(fixture(name)).await;
            assert_allowed(&review, &answer);
            let pod = patched(&review, &answer).unwrap_or_else(|| panic!("{name}: no patch"));
            // The per-pod annotations are the CLI's options.
            let annotations = &review["request"]["object"]["metadata"]["annotations"];
            let mut options = InjectOptions {
                classic,
                image: IMAGE.into(),
                ..InjectOptions::default()
            };
            if let Some(port) = annotations["touchgate.io/app-port"].as_str() {
                options.app_port = Some(port.parse::<AppPort>().unwrap());
            }
            if let Some(image) = annotations["touchgate.io/image"].as_str() {
                options.image = image.into();
            }
            if let Some(map) = annotations["touchgate.io/config-map"].as_str() {
                options.config_map = map.into();
            }
            assert_eq!(
                pod,
                injected_by_cli(&review, &options),
                "{name} ({form}): the patched pod is not what inject writes"
            );
            failures.extend(golden(name, form, &pod));
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}

#[tokio::test]
async fn pods_from_controllers_get_the_sidecar_under_the_app_ports_name() {
    let injector = start(&[]);
    // A ReplicaSet's pod: generateName, no name yet.
    let review: Value = serde_json::from_slice(&fixture("deployment-named-port")).unwrap();
    assert!(
        review["request"]["object"]["metadata"]
            .get("name")
            .is_none()
    );
    let pod = patched(
        &review,
        &injector.review(fixture("deployment-named-port")).await,
    )
    .unwrap();
    let spec = &pod["spec"];
    let sidecar = &spec["initContainers"][0];
    assert_eq!(sidecar["name"], "touchgate");
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert_eq!(sidecar["image"], IMAGE);
    // The Service's `targetPort: http` now reaches touchgate.
    assert_eq!(sidecar["ports"][0]["name"], "http");
    assert_eq!(sidecar["ports"][0]["containerPort"], 8080);
    let app = &spec["containers"][0];
    assert_eq!(app["ports"][0]["name"], "tg-app");
    assert_eq!(app["readinessProbe"]["httpGet"]["port"], "tg-app");
    assert_eq!(app["livenessProbe"]["tcpSocket"]["port"], "tg-app");
    let env = sidecar["env"].as_array().unwrap();
    assert!(env.contains(&json!({"name": "TOUCHGATE_UPSTREAM", "value": "http://127.0.0.1:3000"})));
    // The API server's defaults are kept; the grace period is raised.
    assert_eq!(spec["volumes"][0]["name"], "kube-api-access-x2v9q");
    assert_eq!(spec["volumes"][1]["name"], "touchgate-config");
    assert_eq!(spec["terminationGracePeriodSeconds"], 40);
    assert_eq!(sidecar["lifecycle"]["preStop"]["sleep"]["seconds"], 5);

    // A numeric port: touchgate's port keeps its own name, and the Service
    // must target it (the README says how).
    let review: Value = serde_json::from_slice(&fixture("numeric-port")).unwrap();
    let pod = patched(&review, &injector.review(fixture("numeric-port")).await).unwrap();
    assert_eq!(
        pod["spec"]["initContainers"][0]["ports"][0]["name"],
        "touchgate"
    );
    assert_eq!(
        pod["spec"]["containers"][0]["ports"][0],
        json!({"containerPort": 5000, "protocol": "TCP"})
    );

    // Several containers: the annotations pick the app port, the image and
    // the ConfigMap.
    let review: Value = serde_json::from_slice(&fixture("multiple-containers")).unwrap();
    let pod = patched(
        &review,
        &injector.review(fixture("multiple-containers")).await,
    )
    .unwrap();
    let sidecar = &pod["spec"]["initContainers"][0];
    assert_eq!(sidecar["image"], "registry.example/touchgate:canary");
    assert_eq!(sidecar["ports"][0]["name"], "web");
    assert_eq!(pod["spec"]["containers"][0]["ports"][0]["name"], "metrics");
    assert_eq!(pod["spec"]["containers"][1]["ports"][0]["name"], "tg-app");
    assert!(
        sidecar["env"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "TOUCHGATE_UPSTREAM", "value": "http://127.0.0.1:8000"}))
    );
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    assert!(volumes.contains(
        &json!({"name": "touchgate-config", "configMap": {"name": "landing-touchgate"}})
    ));
}

#[tokio::test]
async fn nothing_to_do_is_allowed_without_a_patch() {
    let injector = start(&[]);
    for name in [
        "already-injected",
        "opted-out",
        "not-a-pod",
        "delete",
        "sidecar-name-taken",
    ] {
        let review: Value = serde_json::from_slice(&fixture(name)).unwrap();
        let answer = injector.review(fixture(name)).await;
        assert_allowed(&review, &answer);
        let response = answer["response"].as_object().unwrap();
        assert!(
            !response.contains_key("patch") && !response.contains_key("patchType"),
            "{name}: {answer}"
        );
        let warnings = response.get("warnings");
        if name == "sidecar-name-taken" {
            // Admitted as it is, and whoever created it is told why.
            let warning = warnings.and_then(|w| w[0].as_str()).unwrap_or_default();
            assert!(warning.contains("\"touchgate-spool\""), "{answer}");
        } else {
            assert!(warnings.is_none(), "{name}: {answer}");
        }
    }
}

#[tokio::test]
async fn hostile_input_gets_its_status_and_the_injector_keeps_serving() {
    let injector = start(&["--header-timeout", "1s"]);
    assert!(injector.healthy().await);

    // Over 1 MiB, with and without a declared length. The client sends
    // nothing the injector does not read before it answers (a declared
    // length is refused before any of the body; a chunked body at its
    // 1 MiB + 1st byte), so that the answer is never lost to a reset.
    let declared = format!(
        "POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n\r\n",
        1024 * 1024 + 1
    );
    let answer = raw_exchange(&injector, declared.as_bytes()).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let mut chunked =
        b"POST /mutate HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..16 {
        chunked.extend_from_slice(b"10000\r\n");
        chunked.extend_from_slice(&[b' '; 0x10000]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"1\r\n ");
    let answer = raw_exchange(&injector, &chunked).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    let (status, body) = injector
        .request("POST", "/mutate", b"{\"apiVersion\":".to_vec())
        .await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("not valid JSON"));

    let mut no_uid: Value = serde_json::from_slice(&fixture("deployment-named-port")).unwrap();
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let (status, body) = injector
        .request("POST", "/mutate", serde_json::to_vec(&no_uid).unwrap())
        .await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("uid"));

    // A slow client: half a request head, then nothing. The injector closes
    // the connection at its header timeout; the read ends on that close
    // (the outer bound only keeps a broken build from hanging the suite).
    let mut slow = injector.connect().await;
    slow.write_all(b"POST /mutate HTTP/1.1\r\nhost: local")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(60), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the slow client was not cut");
    // No TLS handshake at all is cut too.
    let mut silent = TcpStream::connect(injector.addr).await.unwrap();
    let mut buf = [0u8; 1];
    let cut = tokio::time::timeout(Duration::from_secs(60), silent.read(&mut buf)).await;
    assert!(matches!(cut, Ok(Ok(0)) | Ok(Err(_))), "{cut:?}");

    // Other methods and paths.
    assert_eq!(injector.request("GET", "/mutate", Vec::new()).await.0, 405);
    assert_eq!(injector.request("GET", "/", Vec::new()).await.0, 404);

    assert!(injector.healthy().await, "the injector stopped serving");
    let review: Value = serde_json::from_slice(&fixture("deployment-named-port")).unwrap();
    assert!(
        patched(
            &review,
            &injector.review(fixture("deployment-named-port")).await
        )
        .is_some()
    );
}

#[tokio::test]
async fn a_rotated_certificate_is_served_to_new_connections() {
    let injector = start(&[]);
    let first = peer_certificate(&injector.connect().await);
    let second = injector.pki.issue(&injector.dir, 2);
    assert_ne!(first, second);
    // The injector compares the files every second: poll, bounded.
    let mut seen = first.clone();
    for _ in 0..100 {
        seen = peer_certificate(&injector.connect().await);
        if seen == second {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, second, "the new certificate was not picked up");
    // A broken rotation (a key that does not match) keeps the last good one.
    std::fs::write(
        injector.dir.join("tls.key"),
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(peer_certificate(&injector.connect().await), second);
    }
    assert!(injector.healthy().await);
}

/// Write `request` and read what the injector answers until it closes.
async fn raw_exchange(injector: &Injector, request: &[u8]) -> Vec<u8> {
    let mut tls = injector.connect().await;
    tls.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    answer
}

fn peer_certificate(tls: &TlsStream<TcpStream>) -> Vec<u8> {
    let certs: &[CertificateDer<'static>] = tls.get_ref().1.peer_certificates().unwrap();
    certs[0].to_vec()
}

#[test]
fn bad_certificate_files_stop_it_with_status_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.crt"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("tls.key"), "not a key").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_touchgate"))
        .args(["injector", "--listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls.crt"), "{err}");
    let help = Command::new(env!("CARGO_BIN_EXE_touchgate"))
        .args(["injector", "--help"])
        .output()
        .unwrap();
    assert_eq!(help.status.code(), Some(0));
    let help = String::from_utf8_lossy(&help.stdout);
    for option in [
        "--listen",
        "--tls-cert",
        "--tls-key",
        "--classic",
        "--app-port",
        "--image",
        "--config-map",
        "--secret",
        "Exit status: 0",
    ] {
        assert!(help.contains(option), "{option}: {help}");
    }
}

fn manifest(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/kubernetes/injector")
            .join(path),
    )
    .unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            let yaml: serde_norway::Value = serde::Deserialize::deserialize(doc).unwrap();
            serde_json::to_value(yaml).unwrap()
        })
        .collect()
}

#[test]
fn the_manifests_register_the_webhook_as_the_injector_serves_it() {
    let config = &manifest("base/webhook.yaml")[0];
    assert_eq!(config["kind"], "MutatingWebhookConfiguration");
    assert_eq!(
        config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "touchgate-system/touchgate-injector"
    );
    let hook = &config["webhooks"][0];
    assert_eq!(hook["failurePolicy"], "Ignore");
    assert_eq!(hook["sideEffects"], "None");
    assert_eq!(hook["admissionReviewVersions"], json!(["v1"]));
    assert!(hook["timeoutSeconds"].as_i64().unwrap() <= 10);
    assert_eq!(
        hook["namespaceSelector"],
        json!({"matchLabels": {"touchgate.io/inject": "enabled"}})
    );
    assert_eq!(hook["rules"][0]["resources"], json!(["pods"]));
    assert_eq!(hook["rules"][0]["operations"], json!(["CREATE"]));
    assert_eq!(hook["clientConfig"]["service"]["path"], "/mutate");

    // The Deployment's arguments are ones the injector takes, and its
    // Service and certificate name the same things.
    let docs = manifest("base/injector.yaml");
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let help = Command::new(env!("CARGO_BIN_EXE_touchgate"))
        .args(&args)
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(
        help.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&help.stderr)
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["scheme"], "HTTPS");
    let service = docs.iter().find(|d| d["kind"] == "Service").unwrap();
    assert_eq!(
        service["metadata"]["name"],
        hook["clientConfig"]["service"]["name"]
    );
    assert_eq!(
        service["spec"]["ports"][0]["port"],
        hook["clientConfig"]["service"]["port"]
    );
    let certs = manifest("cert-manager.yaml");
    let certificate = certs.iter().find(|d| d["kind"] == "Certificate").unwrap();
    assert_eq!(
        certificate["spec"]["secretName"],
        deployment["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"]
    );
    assert!(
        certificate["spec"]["dnsNames"]
            .as_array()
            .unwrap()
            .contains(&json!("touchgate-injector.touchgate-system.svc"))
    );
}
