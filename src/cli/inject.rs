//! `touchgate inject`: add the touchgate sidecar to every pod template in a
//! stream of Kubernetes YAML documents, like `linkerd inject`.
//!
//! The input is split into documents on `---` lines. A document that holds no
//! pod template (a ConfigMap, a comment, a CRD…) is written back as the exact
//! text it was. A document that is patched is re-emitted from its parsed tree:
//! its leading comment lines are kept, other comments are lost, and flow
//! collections come out in block style. A pod that already has a container
//! named `touchgate` is left alone, so injecting twice changes nothing.
//!
//! YAML handling is written here on top of `saphyr-parser` (the YAML 1.2
//! grammar) rather than a serde YAML crate, because kubectl reads manifests the
//! YAML 1.1 way (go-yaml v2 under sigs.k8s.io/yaml): a plain `0644` is the
//! integer 420 and a plain `yes` is `true` to kubectl. serde_norway and
//! serde_yaml_ng read `0644` as the string "0644" and write the string "yes"
//! unquoted, so a parse/serialize round trip through them changes what the API
//! server receives (`defaultMode`, env values). Here plain scalars are resolved
//! as go-yaml v2 resolves them, and the emitter quotes every string that any
//! YAML reader (1.1 or 1.2) could take for something else.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::str::FromStr;
use std::time::Duration;

use saphyr_parser::{Event, Parser, ScalarStyle, Tag};

/// Container, port and volume names the sidecar adds; one of them already in
/// a pod means "already injected" (the container) or a conflict (the rest).
pub const CONTAINER_NAME: &str = "touchgate";
pub const PROXY_PORT_NAME: &str = "touchgate";
pub const ADMIN_PORT_NAME: &str = "tg-admin";
pub const PROXY_PORT: u16 = 8080;
pub const ADMIN_PORT: u16 = 9901;
pub const CONFIG_VOLUME: &str = "touchgate-config";
pub const SPOOL_VOLUME: &str = "touchgate-spool";
/// Where the ConfigMap is mounted; the config file is `touchgate.toml` in it.
pub const CONFIG_DIR: &str = "/etc/touchgate";
/// Where the spool `emptyDir` is mounted: `spool.dir` must be below it.
pub const SPOOL_DIR: &str = "/var/lib/touchgate";
/// Seconds added to the drain budget for process exit and the spool's last
/// fsync, so the kubelet's SIGKILL never lands in the middle of a drain.
pub const GRACE_MARGIN_SECS: u64 = 5;

/// The image the sidecar runs unless `--image` says otherwise.
pub fn default_image() -> String {
    format!("ghcr.io/touchgate/touchgate:{}", env!("CARGO_PKG_VERSION"))
}

/// The app's port that touchgate forwards to: a container port name or a
/// number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppPort {
    Name(String),
    Number(u16),
}

impl FromStr for AppPort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("the app port is empty: give a container port name or number".into());
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.parse::<u16>() {
                Ok(n) if n > 0 => Ok(AppPort::Number(n)),
                _ => Err(format!("{s} is not a port number (1-65535)")),
            };
        }
        // An IANA_SVC_NAME, as Kubernetes validates container port names.
        let valid = s.len() <= 15
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && s.bytes().any(|b| b.is_ascii_lowercase())
            && !s.starts_with('-')
            && !s.ends_with('-')
            && !s.contains("--");
        if valid {
            Ok(AppPort::Name(s.to_string()))
        } else {
            Err(format!(
                "{s:?} is neither a port number nor a container port name \
                 (lowercase letters, digits and '-', at most 15 characters)"
            ))
        }
    }
}

impl std::fmt::Display for AppPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppPort::Name(n) => f.write_str(n),
            AppPort::Number(n) => write!(f, "{n}"),
        }
    }
}

/// What `touchgate inject` adds and how.
#[derive(Debug, Clone)]
pub struct InjectOptions {
    /// Put the sidecar in `containers` instead of a native sidecar (an
    /// `initContainers` entry with `restartPolicy: Always`, Kubernetes ≥ 1.29).
    pub classic: bool,
    /// The app's port; default: the first container's first port.
    pub app_port: Option<AppPort>,
    /// Sidecar image; default [`default_image`].
    pub image: String,
    /// ConfigMap holding `touchgate.toml`.
    pub config_map: String,
    /// Secret holding `TOUCHGATE_SECRET` (and any other `*_env` variable of
    /// the config, by key name).
    pub secret: String,
    /// `proxy.drain_delay` of the config the sidecar will run with: the
    /// preStop sleep, and part of the grace period.
    pub drain_delay: Duration,
    /// `proxy.drain_timeout` of that config: the rest of the grace period.
    pub drain_timeout: Duration,
}

impl Default for InjectOptions {
    fn default() -> Self {
        let proxy = crate::config::ProxyConfig::default();
        InjectOptions {
            classic: false,
            app_port: None,
            image: default_image(),
            config_map: "touchgate-config".into(),
            secret: "touchgate".into(),
            drain_delay: proxy.drain_delay,
            drain_timeout: proxy.drain_timeout,
        }
    }
}

impl InjectOptions {
    /// Take the drain timings from the config the sidecar will run with, so
    /// the preStop sleep and the grace period match it.
    pub fn with_drain_from(mut self, proxy: &crate::config::ProxyConfig) -> Self {
        self.drain_delay = proxy.drain_delay;
        self.drain_timeout = proxy.drain_timeout;
        self
    }
}

/// Why the input could not be injected. Documents are numbered from 1 in the
/// order they appear; lines are 1-based lines of the whole input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    #[error("document {document}: line {line}, column {column}: invalid YAML: {message}")]
    Parse {
        document: usize,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("document {document} (line {line}): {object}: cannot inject: {reason}")]
    Patch {
        document: usize,
        /// The line the document starts on.
        line: usize,
        /// `Kind/name`, prefixed by the item number inside a List.
        object: String,
        reason: String,
    },
}

impl InjectError {
    /// The 1-based index of the document at fault.
    pub fn document(&self) -> usize {
        match self {
            InjectError::Parse { document, .. } | InjectError::Patch { document, .. } => *document,
        }
    }
}

/// Add the sidecar to every pod template of `input` (multi-document YAML) and
/// return the whole stream, untouched documents byte for byte.
pub fn inject(input: &str, opts: &InjectOptions) -> Result<String, InjectError> {
    let chunks = split_documents(input);
    let mut docs = Vec::with_capacity(chunks.len());
    let mut number = 0;
    for chunk in &chunks {
        let loaded = load(chunk.text, chunk.first_line).map_err(|e| InjectError::Parse {
            document: number + 1,
            line: e.line,
            column: e.column,
            message: e.message,
        })?;
        if loaded.is_some() {
            number += 1;
        }
        docs.push(Doc {
            number,
            loaded,
            changed: false,
        });
    }

    // Workloads first: the Services to rewire are the ones selecting their pods.
    let mut targets = Vec::new();
    for (doc, chunk) in docs.iter_mut().zip(&chunks) {
        if let Some(loaded) = &mut doc.loaded {
            let mut changed = false;
            visit_objects(&mut loaded.root, None, &mut |obj, item| {
                let outcome = patch_workload(obj, opts, &mut targets)
                    .map_err(|reason| patch_error(doc.number, chunk, obj, item, reason))?;
                changed |= outcome;
                Ok(())
            })?;
            if changed {
                refuse_lossy(loaded, doc.number, chunk)?;
            }
            doc.changed |= changed;
        }
    }
    if !targets.is_empty() {
        for (doc, chunk) in docs.iter_mut().zip(&chunks) {
            if let Some(loaded) = &mut doc.loaded {
                let mut changed = false;
                visit_objects(&mut loaded.root, None, &mut |obj, _| {
                    changed |= rewire_service(obj, &targets);
                    Ok(())
                })?;
                if changed {
                    refuse_lossy(loaded, doc.number, chunk)?;
                }
                doc.changed |= changed;
            }
        }
    }

    let mut out = String::with_capacity(input.len() + 2048 * docs.len());
    for (doc, chunk) in docs.iter().zip(&chunks) {
        match &doc.loaded {
            Some(loaded) if doc.changed => {
                if chunk.has_start_marker {
                    out.push_str("---\n");
                }
                for line in chunk.leading_comments() {
                    out.push_str(line.trim_end_matches(['\r', '\n']));
                    out.push('\n');
                }
                emit_document(&mut out, &loaded.root);
                if chunk.has_end_marker {
                    out.push_str("...\n");
                }
            }
            _ => out.push_str(chunk.text),
        }
    }
    Ok(out)
}

struct Doc {
    number: usize,
    loaded: Option<Loaded>,
    changed: bool,
}

fn patch_error(
    document: usize,
    chunk: &Chunk,
    obj: &Node,
    item: Option<usize>,
    reason: String,
) -> InjectError {
    InjectError::Patch {
        document,
        line: chunk.first_line,
        object: object_name(obj, item),
        reason,
    }
}

/// `Kind/name`, prefixed by the item number inside a List.
fn object_name(obj: &Node, item: Option<usize>) -> String {
    let name = obj
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Node::as_str)
        .unwrap_or("(unnamed)");
    let kind = obj
        .get("kind")
        .and_then(Node::as_str)
        .unwrap_or("(no kind)");
    match item {
        Some(i) => format!("List item {}: {kind}/{name}", i + 1),
        None => format!("{kind}/{name}"),
    }
}

/// A patched document is re-emitted from its tree, so anything the tree could
/// not hold faithfully would be silently altered: refuse instead.
fn refuse_lossy(loaded: &Loaded, document: usize, chunk: &Chunk) -> Result<(), InjectError> {
    match &loaded.problem {
        Some((line, what)) => Err(InjectError::Patch {
            document,
            line: chunk.first_line,
            object: object_name(&loaded.root, None),
            reason: format!(
                "line {line}: {what}; inject re-writes patched documents and cannot keep this"
            ),
        }),
        None => Ok(()),
    }
}

/// Called with an object and, inside a List, its item index.
type ObjectVisitor<'a> = dyn FnMut(&mut Node, Option<usize>) -> Result<(), InjectError> + 'a;

/// Call `f` on the document's object and, for a `List` (or `*List`), on each
/// of its items with the item's index.
fn visit_objects(
    root: &mut Node,
    item: Option<usize>,
    f: &mut ObjectVisitor<'_>,
) -> Result<(), InjectError> {
    let is_list = root
        .get("kind")
        .and_then(Node::as_str)
        .is_some_and(|k| k.ends_with("List"))
        && matches!(root.get("items"), Some(Node::Seq(_)));
    if is_list && item.is_none() {
        if let Some(Node::Seq(items)) = root.get_mut("items") {
            for (i, obj) in items.iter_mut().enumerate() {
                visit_objects(obj, Some(i), f)?;
            }
        }
        return Ok(());
    }
    f(root, item)
}

// ---------------------------------------------------------------------------
// Workloads

/// Where a workload kind keeps its pod template, for the API groups that
/// define the kind (a CRD that reuses a name is not a workload).
fn template_path(api_version: &str, kind: &str) -> Option<&'static [&'static str]> {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    match (group, kind) {
        ("apps" | "extensions", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => {
            Some(&["spec", "template"])
        }
        ("", "ReplicationController") | ("batch", "Job") => Some(&["spec", "template"]),
        ("batch", "CronJob") => Some(&["spec", "jobTemplate", "spec", "template"]),
        ("", "Pod") => Some(&[]),
        _ => None,
    }
}

/// A port of an injected pod that Services may target, so that the ones that
/// do can be pointed at touchgate instead.
struct AppTarget {
    namespace: Option<String>,
    labels: Vec<(String, String)>,
    port_name: Option<String>,
    port_number: u16,
}

/// Patch `obj` if it is a workload; `Ok(true)` when it changed.
fn patch_workload(
    obj: &mut Node,
    opts: &InjectOptions,
    targets: &mut Vec<AppTarget>,
) -> Result<bool, String> {
    let (Some(api_version), Some(kind)) = (
        obj.get("apiVersion").and_then(Node::as_str),
        obj.get("kind").and_then(Node::as_str),
    ) else {
        return Ok(false);
    };
    let Some(path) = template_path(api_version, kind) else {
        return Ok(false);
    };
    let namespace = obj
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Node::as_str)
        .map(str::to_string);
    let mut template = &mut *obj;
    let mut walked = Vec::new();
    for key in path {
        walked.push(*key);
        template = match template.get_mut(key) {
            Some(node @ Node::Map(_)) => node,
            _ => return Err(format!("{} is missing or not a mapping", walked.join("."))),
        };
    }
    let prefix = if walked.is_empty() {
        String::new()
    } else {
        format!("{}.", walked.join("."))
    };
    let labels = string_map(template.get("metadata").and_then(|m| m.get("labels")));
    let spec = match template.get_mut("spec") {
        Some(spec @ Node::Map(_)) => spec,
        _ => return Err(format!("{prefix}spec is missing or not a mapping")),
    };
    let outcome = patch_pod_spec(spec, opts).map_err(|e| format!("{prefix}spec.{e}"))?;
    let (changed, port) = match outcome {
        PodOutcome::Injected(port) => (true, Some(port)),
        PodOutcome::AlreadyInjected(port) => (false, port),
    };
    if let Some((port_name, port_number)) = port {
        targets.push(AppTarget {
            namespace,
            labels,
            port_name,
            port_number,
        });
    }
    Ok(changed)
}

enum PodOutcome {
    Injected((Option<String>, u16)),
    AlreadyInjected(Option<(Option<String>, u16)>),
}

/// Add the sidecar, its volumes and the grace period to a pod spec. Errors
/// name the field relative to the pod spec.
fn patch_pod_spec(spec: &mut Node, opts: &InjectOptions) -> Result<PodOutcome, String> {
    let containers = match spec.get("containers") {
        Some(Node::Seq(c)) if !c.is_empty() => &c[..],
        Some(Node::Seq(_)) => return Err("containers is empty".into()),
        Some(_) => return Err("containers is not a list".into()),
        None => return Err("containers is missing".into()),
    };
    let init_containers = match spec.get("initContainers") {
        None | Some(Node::Null) => &[][..],
        Some(Node::Seq(c)) => &c[..],
        Some(_) => return Err("initContainers is not a list".into()),
    };
    for (field, list) in [
        ("containers", containers),
        ("initContainers", init_containers),
    ] {
        for (i, c) in list.iter().enumerate() {
            if !matches!(c, Node::Map(_)) {
                return Err(format!("{field}[{i}] is not a mapping"));
            }
        }
    }
    let named = |c: &&Node| c.get("name").and_then(Node::as_str) == Some(CONTAINER_NAME);
    if let Some(sidecar) = containers.iter().chain(init_containers).find(named) {
        return Ok(PodOutcome::AlreadyInjected(existing_app_port(
            sidecar, containers,
        )));
    }

    let app = app_port(containers, opts.app_port.as_ref())?;
    check_conflicts(containers, init_containers, app.1)?;
    let volumes_empty = Vec::new();
    let volumes = match spec.get("volumes") {
        None | Some(Node::Null) => &volumes_empty,
        Some(Node::Seq(v)) => v,
        Some(_) => return Err("volumes is not a list".into()),
    };
    for v in volumes {
        if let Some(name @ (CONFIG_VOLUME | SPOOL_VOLUME)) = v.get("name").and_then(Node::as_str) {
            return Err(format!("a volume named {name:?} already exists"));
        }
    }

    let sidecar = sidecar_container(opts, app.1);
    if opts.classic && spec.get("restartPolicy").and_then(Node::as_str) != Some("Always") {
        // A Job's pod completes when all its containers exit; a classic
        // sidecar never does. The native form is terminated for it.
        tracing::warn!(
            "classic sidecar in a pod with restartPolicy other than Always (a Job?):              the pod will not complete while touchgate runs; prefer the native form"
        );
    }
    if opts.classic {
        if let Some(Node::Seq(c)) = spec.get_mut("containers") {
            c.push(sidecar);
        }
    } else {
        match spec.get_mut("initContainers") {
            Some(Node::Seq(c)) => c.insert(0, sidecar),
            // Before `containers`: the order they start in.
            _ => spec.insert_before("containers", "initContainers", Node::Seq(vec![sidecar])),
        }
    }
    let new_volumes = [
        map([
            ("name", s(CONFIG_VOLUME)),
            ("configMap", map([("name", s(&opts.config_map))])),
        ]),
        map([
            ("name", s(SPOOL_VOLUME)),
            ("emptyDir", map([("sizeLimit", s("2Gi"))])),
        ]),
    ];
    match spec.get_mut("volumes") {
        Some(Node::Seq(v)) => v.extend(new_volumes),
        _ => spec.set("volumes", Node::Seq(new_volumes.into())),
    }

    let grace = grace_period_secs(opts);
    let current = match spec.get("terminationGracePeriodSeconds") {
        None | Some(Node::Null) => None,
        Some(Node::Int(n)) => Some(*n),
        Some(_) => return Err("terminationGracePeriodSeconds is not an integer".into()),
    };
    if current.is_none_or(|n| n < grace) {
        spec.set("terminationGracePeriodSeconds", Node::Int(grace));
    }
    Ok(PodOutcome::Injected(app))
}

/// preStop sleep (drain_delay), then touchgate's own drain after SIGTERM
/// (drain_delay of accepting, drain_timeout for in-flight requests), plus a
/// margin: the grace period counts from before the preStop hook.
fn grace_period_secs(opts: &InjectOptions) -> i64 {
    let total = prestop_secs(opts) + ceil_secs(opts.drain_delay) + ceil_secs(opts.drain_timeout);
    i64::try_from(total + GRACE_MARGIN_SECS).unwrap_or(i64::MAX)
}

fn prestop_secs(opts: &InjectOptions) -> u64 {
    ceil_secs(opts.drain_delay)
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The app port as `(name, number)`.
fn app_port(
    containers: &[Node],
    wanted: Option<&AppPort>,
) -> Result<(Option<String>, u16), String> {
    let ports = |c: &Node| -> Vec<(Option<String>, Option<u16>)> {
        match c.get("ports") {
            Some(Node::Seq(ports)) => ports
                .iter()
                .map(|p| {
                    let name = p.get("name").and_then(Node::as_str).map(str::to_string);
                    let number = match p.get("containerPort") {
                        Some(Node::Int(n)) => u16::try_from(*n).ok().filter(|n| *n > 0),
                        _ => None,
                    };
                    (name, number)
                })
                .collect(),
            _ => Vec::new(),
        }
    };
    let container_name = |c: &Node| {
        c.get("name")
            .and_then(Node::as_str)
            .unwrap_or("")
            .to_string()
    };
    match wanted {
        None => {
            let first = &containers[0];
            match ports(first).into_iter().next() {
                Some((name, Some(number))) => Ok((name, number)),
                Some((_, None)) => Err(format!(
                    "containers[0] ({:?}): ports[0].containerPort is missing or not a port number",
                    container_name(first)
                )),
                None => Err(format!(
                    "containers[0] ({:?}) declares no ports, so the app port is unknown; \
                     pass --app-port NAME_OR_NUMBER",
                    container_name(first)
                )),
            }
        }
        Some(AppPort::Name(wanted)) => {
            for c in containers {
                for (name, number) in ports(c) {
                    if name.as_deref() == Some(wanted.as_str()) {
                        return match number {
                            Some(n) => Ok((name, n)),
                            None => Err(format!(
                                "containers[{:?}]: port {wanted:?} has no valid containerPort",
                                container_name(c)
                            )),
                        };
                    }
                }
            }
            Err(format!(
                "containers: no container declares a port named {wanted:?} (--app-port)"
            ))
        }
        // A number need not be declared: apps often listen on ports they
        // never list.
        Some(AppPort::Number(wanted)) => Ok(containers
            .iter()
            .flat_map(ports)
            .find(|(_, n)| *n == Some(*wanted))
            .map_or((None, *wanted), |(name, _)| (name, *wanted))),
    }
}

/// The pod shares one network namespace: touchgate's ports and port names
/// must be free.
fn check_conflicts(containers: &[Node], init: &[Node], app_port: u16) -> Result<(), String> {
    for taken in [PROXY_PORT, ADMIN_PORT] {
        if app_port == taken {
            return Err(format!(
                "containers: the app port {app_port} is a port the touchgate sidecar listens on; \
                 move the app to another port"
            ));
        }
    }
    for (field, list) in [("containers", containers), ("initContainers", init)] {
        for (i, c) in list.iter().enumerate() {
            let Some(Node::Seq(ports)) = c.get("ports") else {
                continue;
            };
            for p in ports {
                if let Some(Node::Int(n)) = p.get("containerPort")
                    && (*n == i64::from(PROXY_PORT) || *n == i64::from(ADMIN_PORT))
                {
                    return Err(format!(
                        "{field}[{i}] declares port {n}, which the touchgate sidecar \
                         listens on (containers of a pod share its ports)"
                    ));
                }
                if let Some(name @ (PROXY_PORT_NAME | ADMIN_PORT_NAME)) =
                    p.get("name").and_then(Node::as_str)
                {
                    return Err(format!(
                        "{field}[{i}] declares a port named {name:?}, which the touchgate \
                         sidecar uses"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The app port of a pod injected earlier, from the sidecar's upstream.
fn existing_app_port(sidecar: &Node, containers: &[Node]) -> Option<(Option<String>, u16)> {
    let Some(Node::Seq(env)) = sidecar.get("env") else {
        return None;
    };
    let upstream = env
        .iter()
        .find(|e| e.get("name").and_then(Node::as_str) == Some("TOUCHGATE_UPSTREAM"))?
        .get("value")?
        .as_str()?;
    let number: u16 = upstream
        .rsplit_once(':')?
        .1
        .trim_end_matches('/')
        .parse()
        .ok()?;
    app_port(containers, Some(&AppPort::Number(number))).ok()
}

fn sidecar_container(opts: &InjectOptions, app_port: u16) -> Node {
    let config_file = format!("{CONFIG_DIR}/touchgate.toml");
    let probe = |path: &str, period: i64, failures: i64| {
        map([
            (
                "httpGet",
                map([("path", s(path)), ("port", s(ADMIN_PORT_NAME))]),
            ),
            ("periodSeconds", Node::Int(period)),
            ("failureThreshold", Node::Int(failures)),
        ])
    };
    let port = |name: &str, number: u16| {
        map([
            ("name", s(name)),
            ("containerPort", Node::Int(i64::from(number))),
            ("protocol", s("TCP")),
        ])
    };
    let mut c = map([
        ("name", s(CONTAINER_NAME)),
        ("image", s(&opts.image)),
        (
            "args",
            Node::Seq(vec![s("run"), s("--config"), s(&config_file)]),
        ),
        (
            "ports",
            Node::Seq(vec![
                port(PROXY_PORT_NAME, PROXY_PORT),
                port(ADMIN_PORT_NAME, ADMIN_PORT),
            ]),
        ),
        (
            "env",
            Node::Seq(vec![
                map([
                    ("name", s("TOUCHGATE_SECRET")),
                    (
                        "valueFrom",
                        map([(
                            "secretKeyRef",
                            map([("name", s(&opts.secret)), ("key", s("TOUCHGATE_SECRET"))]),
                        )]),
                    ),
                ]),
                map([
                    ("name", s("TOUCHGATE_UPSTREAM")),
                    ("value", s(&format!("http://127.0.0.1:{app_port}"))),
                ]),
            ]),
        ),
        (
            "envFrom",
            Node::Seq(vec![map([("secretRef", map([("name", s(&opts.secret))]))])]),
        ),
        // Native sidecar: the app's containers start only once this passes.
        ("startupProbe", probe("/healthz", 1, 30)),
        ("readinessProbe", probe("/readyz", 5, 2)),
        ("livenessProbe", probe("/healthz", 10, 3)),
        (
            "resources",
            map([
                (
                    "requests",
                    map([("cpu", s("100m")), ("memory", s("128Mi"))]),
                ),
                ("limits", map([("cpu", s("1")), ("memory", s("256Mi"))])),
            ]),
        ),
        (
            "securityContext",
            map([
                ("runAsNonRoot", Node::Bool(true)),
                ("runAsUser", Node::Int(65532)),
                ("runAsGroup", Node::Int(65532)),
                ("allowPrivilegeEscalation", Node::Bool(false)),
                ("readOnlyRootFilesystem", Node::Bool(true)),
                ("capabilities", map([("drop", Node::Seq(vec![s("ALL")]))])),
                ("seccompProfile", map([("type", s("RuntimeDefault"))])),
            ]),
        ),
        (
            "volumeMounts",
            Node::Seq(vec![
                map([
                    ("name", s(CONFIG_VOLUME)),
                    ("mountPath", s(CONFIG_DIR)),
                    ("readOnly", Node::Bool(true)),
                ]),
                map([("name", s(SPOOL_VOLUME)), ("mountPath", s(SPOOL_DIR))]),
            ]),
        ),
    ]);
    let prestop = prestop_secs(opts);
    if prestop > 0 {
        // The `sleep` action (Kubernetes ≥ 1.30): the distroless image has no
        // shell and no sleep binary for an `exec` hook.
        let seconds = i64::try_from(prestop).unwrap_or(i64::MAX);
        c.set(
            "lifecycle",
            map([(
                "preStop",
                map([("sleep", map([("seconds", Node::Int(seconds))]))]),
            )]),
        );
    }
    if !opts.classic {
        c.set("restartPolicy", s("Always"));
    }
    c
}

fn string_map(node: Option<&Node>) -> Vec<(String, String)> {
    match node {
        Some(Node::Map(entries)) => entries
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
            .collect(),
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------------------
// Services

/// Point every port of a core Service that selects an injected pod and
/// targets its app port at touchgate's port. `true` when it changed.
fn rewire_service(obj: &mut Node, targets: &[AppTarget]) -> bool {
    if obj.get("apiVersion").and_then(Node::as_str) != Some("v1")
        || obj.get("kind").and_then(Node::as_str) != Some("Service")
    {
        return false;
    }
    let namespace = obj
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Node::as_str)
        .map(str::to_string);
    let Some(spec) = obj.get_mut("spec") else {
        return false;
    };
    let selector = string_map(spec.get("selector"));
    if selector.is_empty() {
        // No selector: endpoints are managed by hand, not our pods.
        return false;
    }
    if spec.get("clusterIP").and_then(Node::as_str) == Some("None") {
        // Headless: clients dial pod addresses and ports directly (peer
        // discovery), never through targetPort; rewiring it would only
        // mislead SRV lookups.
        return false;
    }
    let selected: Vec<&AppTarget> = targets
        .iter()
        .filter(|t| match (&namespace, &t.namespace) {
            (Some(a), Some(b)) => a == b,
            // Unset on either side: the namespace comes from `kubectl -n`.
            _ => true,
        })
        .filter(|t| selector.iter().all(|kv| t.labels.contains(kv)))
        .collect();
    if selected.is_empty() {
        return false;
    }
    let Some(Node::Seq(ports)) = spec.get_mut("ports") else {
        return false;
    };
    let mut changed = false;
    for port in ports.iter_mut() {
        let target = port.get("targetPort").or_else(|| port.get("port"));
        let hits = selected.iter().any(|t| match target {
            Some(Node::Int(n)) => *n == i64::from(t.port_number),
            Some(Node::Str(name)) => t.port_name.as_deref() == Some(name.as_str()),
            _ => false,
        });
        if hits {
            if port.get("targetPort").is_some() {
                port.set("targetPort", s(PROXY_PORT_NAME));
            } else {
                port.insert_after("port", "targetPort", s(PROXY_PORT_NAME));
            }
            changed = true;
        }
    }
    changed
}

// ---------------------------------------------------------------------------
// Documents as text

/// One `---`-separated piece of the input, kept as text so that untouched
/// documents are written back exactly.
struct Chunk<'a> {
    text: &'a str,
    /// 1-based line of the input where this piece starts.
    first_line: usize,
    has_start_marker: bool,
    has_end_marker: bool,
}

impl<'a> Chunk<'a> {
    /// Comment and blank lines between the `---` line and the content (e.g.
    /// helm's `# Source:` line), kept when the document is re-emitted.
    fn leading_comments(&self) -> impl Iterator<Item = &'a str> {
        let mut lines = self.text.split_inclusive('\n').peekable();
        if self.has_start_marker {
            lines.next();
        }
        lines.take_while(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#')
        })
    }
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

/// Split on document markers. A line starting with `---` or `...` at column
/// 0 can never be inside a scalar (YAML forbids it), so this split agrees
/// with the parser. Directive lines (`%…`) right before a `---` travel with
/// the document they apply to.
fn split_documents<'a>(input: &'a str) -> Vec<Chunk<'a>> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut pos = 0;
    // Start offset and line of a run of directive lines, if the lines just
    // read were directives.
    let mut directives: Option<(usize, usize)> = None;
    let push = |chunks: &mut Vec<Chunk<'a>>, from: usize, to: usize, line: usize| {
        if from < to {
            let text = &input[from..to];
            let first = text.split_inclusive('\n').next().unwrap_or("");
            let last = text
                .trim_end_matches(['\r', '\n'])
                .rsplit('\n')
                .next()
                .unwrap_or("");
            chunks.push(Chunk {
                text,
                first_line: line,
                has_start_marker: is_marker(first, "---"),
                has_end_marker: is_marker(last, "..."),
            });
        }
    };
    for (line_no, line) in (1..).zip(input.split_inclusive('\n')) {
        let end = pos + line.len();
        if is_marker(line, "---") {
            let (cut, cut_line) = directives.unwrap_or((pos, line_no));
            push(&mut chunks, start, cut, start_line);
            start = cut;
            start_line = cut_line;
            directives = None;
        } else if line.starts_with('%') {
            directives.get_or_insert((pos, line_no));
        } else {
            directives = None;
        }
        if is_marker(line, "...") {
            push(&mut chunks, start, end, start_line);
            start = end;
            start_line = line_no + 1;
        }
        pos = end;
    }
    push(&mut chunks, start, input.len(), start_line);
    chunks
}

// ---------------------------------------------------------------------------
// The tree, and reading it the way kubectl does

/// A YAML value as kubectl sees it after reading (JSON-like; mapping keys are
/// strings, in document order).
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

fn s(v: &str) -> Node {
    Node::Str(v.to_string())
}

fn map<const N: usize>(entries: [(&str, Node); N]) -> Node {
    Node::Map(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

impl Node {
    fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        match self {
            Node::Map(entries) => entries.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Replace the value of `key`, or append it.
    fn set(&mut self, key: &str, value: Node) {
        if let Some(slot) = self.get_mut(key) {
            *slot = value;
        } else if let Node::Map(entries) = self {
            entries.push((key.to_string(), value));
        }
    }

    /// Insert `key` right before `before` (or at the end).
    fn insert_before(&mut self, before: &str, key: &str, value: Node) {
        if let Node::Map(entries) = self {
            let at = entries
                .iter()
                .position(|(k, _)| k == before)
                .unwrap_or(entries.len());
            entries.insert(at, (key.to_string(), value));
        }
    }

    /// Insert `key` right after `after` (or at the end).
    fn insert_after(&mut self, after: &str, key: &str, value: Node) {
        if let Node::Map(entries) = self {
            let at = entries
                .iter()
                .position(|(k, _)| k == after)
                .map_or(entries.len(), |i| i + 1);
            entries.insert(at, (key.to_string(), value));
        }
    }

    fn count(&self) -> usize {
        1 + match self {
            Node::Seq(items) => items.iter().map(Node::count).sum(),
            Node::Map(entries) => entries.iter().map(|(_, v)| v.count()).sum(),
            _ => 0,
        }
    }
}

struct Loaded {
    root: Node,
    /// Something the tree does not hold faithfully (an unknown tag, a complex
    /// key, a duplicate key), with its line: fatal only if the document must
    /// be re-emitted.
    problem: Option<(usize, String)>,
}

struct LoadError {
    line: usize,
    column: usize,
    message: String,
}

/// Total nodes that aliases may expand to in one document: a guard against
/// "billion laughs" inputs.
const ALIAS_BUDGET: usize = 100_000;

enum Key {
    Str(String),
    /// A plain `<<`: merge the value's mapping(s) in (go-yaml supports it).
    Merge,
}

enum Entry {
    Pair(String, Node),
    Merge(Vec<Vec<(String, Node)>>),
}

enum Frame {
    Seq(Vec<Node>, usize),
    Map {
        entries: Vec<Entry>,
        key: Option<Key>,
        anchor: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    alias_budget_used: usize,
    root: Option<Node>,
    problem: Option<(usize, String)>,
}

impl Builder {
    fn note(&mut self, line: usize, what: String) {
        self.problem.get_or_insert((line, what));
    }

    fn awaiting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }

    /// A finished node goes to its parent (as key or value) or becomes the
    /// root.
    fn push(&mut self, node: Node, anchor: usize, line: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let mut problem = None;
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq(items, _)) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => {
                    *key = Some(Key::Str(match node {
                        Node::Str(s) => s,
                        Node::Null => "null".into(),
                        Node::Bool(b) => b.to_string(),
                        Node::Int(i) => i.to_string(),
                        Node::Float(f) => format_float(f),
                        Node::Seq(_) | Node::Map(_) => {
                            problem = Some("a mapping key that is not a scalar".to_string());
                            String::new()
                        }
                    }))
                }
                Some(Key::Merge) => match node {
                    Node::Map(m) => entries.push(Entry::Merge(vec![m])),
                    Node::Seq(items) => {
                        let mut maps = Vec::new();
                        for item in items {
                            match item {
                                Node::Map(m) => maps.push(m),
                                _ => problem = Some("a merge key (<<) over a non-mapping".into()),
                            }
                        }
                        entries.push(Entry::Merge(maps));
                    }
                    _ => problem = Some("a merge key (<<) over a non-mapping".into()),
                },
                Some(Key::Str(k)) => {
                    let duplicate = entries
                        .iter()
                        .any(|e| matches!(e, Entry::Pair(existing, _) if *existing == k));
                    if duplicate {
                        problem = Some(format!("duplicate mapping key {k:?}"));
                    }
                    entries.push(Entry::Pair(k, node));
                }
            },
        }
        if let Some(what) = problem {
            self.note(line, what);
        }
    }

    fn end_map(entries: Vec<Entry>) -> Node {
        let explicit: Vec<String> = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Pair(k, _) => Some(k.clone()),
                Entry::Merge(_) => None,
            })
            .collect();
        let mut out: Vec<(String, Node)> = Vec::new();
        for entry in entries {
            match entry {
                Entry::Pair(k, v) => {
                    // A later duplicate wins, as in go-yaml.
                    if let Some(slot) = out.iter_mut().find(|(existing, _)| *existing == k) {
                        slot.1 = v;
                    } else {
                        out.push((k, v));
                    }
                }
                // Explicit keys win over merged ones; among merged maps the
                // earlier wins.
                Entry::Merge(maps) => {
                    for (k, v) in maps.into_iter().flatten() {
                        if !explicit.contains(&k) && !out.iter().any(|(e, _)| *e == k) {
                            out.push((k, v));
                        }
                    }
                }
            }
        }
        Node::Map(out)
    }
}

/// Parse one chunk. `Ok(None)` when it holds no document (only comments or
/// blank lines).
fn load(text: &str, first_line: usize) -> Result<Option<Loaded>, LoadError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut parser = Parser::new_from_str(text);
    let mut b = Builder::default();
    let mut documents = 0;
    let abs = |line: usize| line + first_line - 1;
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| LoadError {
            line: abs(e.marker().line()),
            column: e.marker().col() + 1,
            message: e.info().to_string(),
        })?;
        let line = abs(span.start.line());
        match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing | Event::DocumentEnd => {}
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    // split_documents cuts at every marker, so a second
                    // document here means a bare document after `...`.
                    return Err(LoadError {
                        line,
                        column: 1,
                        message: "a second document without a `---` line".into(),
                    });
                }
            }
            Event::Scalar(value, style, anchor, tag) => {
                let node = if b.awaiting_key()
                    && style == ScalarStyle::Plain
                    && tag.is_none()
                    && value == "<<"
                {
                    if let Some(Frame::Map { key, .. }) = b.stack.last_mut() {
                        *key = Some(Key::Merge);
                    }
                    continue;
                } else {
                    match resolve_scalar(&value, style, tag.as_deref()) {
                        Ok(node) => node,
                        Err(what) => {
                            b.note(line, what);
                            Node::Str(value.into_owned())
                        }
                    }
                };
                b.push(node, anchor, line);
            }
            Event::SequenceStart(anchor, tag) => {
                if let Some(t) = tag.as_deref().filter(|t| !is_core(t, "seq")) {
                    b.note(line, format!("the tag {}", show_tag(t)));
                }
                b.stack.push(Frame::Seq(Vec::new(), anchor));
            }
            Event::MappingStart(anchor, tag) => {
                if let Some(t) = tag.as_deref().filter(|t| !is_core(t, "map")) {
                    b.note(line, format!("the tag {}", show_tag(t)));
                }
                b.stack.push(Frame::Map {
                    entries: Vec::new(),
                    key: None,
                    anchor,
                });
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq(items, anchor)) = b.stack.pop() {
                    b.push(Node::Seq(items), anchor, line);
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map {
                    entries, anchor, ..
                }) = b.stack.pop()
                {
                    b.push(Builder::end_map(entries), anchor, line);
                }
            }
            Event::Alias(id) => {
                let Some(node) = b.anchors.get(&id).cloned() else {
                    return Err(LoadError {
                        line,
                        column: span.start.col() + 1,
                        message: "alias to an unknown anchor".into(),
                    });
                };
                b.alias_budget_used += node.count();
                if b.alias_budget_used > ALIAS_BUDGET {
                    return Err(LoadError {
                        line,
                        column: span.start.col() + 1,
                        message: format!("aliases expand to more than {ALIAS_BUDGET} nodes"),
                    });
                }
                b.push(node, 0, line);
            }
        }
    }
    if documents == 0 {
        return Ok(None);
    }
    Ok(Some(Loaded {
        root: b.root.unwrap_or(Node::Null),
        problem: b.problem,
    }))
}

/// A tag as it is usually written: `!!binary`, `!Ref`.
fn show_tag(tag: &Tag) -> String {
    if tag.is_yaml_core_schema() {
        format!("!!{}", tag.suffix)
    } else if tag.handle == "!" {
        format!("!{}", tag.suffix)
    } else {
        format!("{}{}", tag.handle, tag.suffix)
    }
}

fn is_core(tag: &Tag, suffix: &str) -> bool {
    tag.is_yaml_core_schema() && tag.suffix == suffix
}

/// A scalar's value: plain scalars resolved as go-yaml v2 does, quoted and
/// block scalars are strings, core tags honoured.
fn resolve_scalar(value: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Node, String> {
    let Some(tag) = tag else {
        return Ok(if style == ScalarStyle::Plain {
            resolve_plain(value)
        } else {
            Node::Str(value.to_string())
        });
    };
    if tag.handle == "!" && tag.suffix.is_empty() {
        return Ok(Node::Str(value.to_string()));
    }
    if !tag.is_yaml_core_schema() {
        return Err(format!("the tag {}", show_tag(tag)));
    }
    let resolved = resolve_plain(value);
    match (tag.suffix.as_str(), resolved) {
        ("str", _) => Ok(Node::Str(value.to_string())),
        ("int", n @ Node::Int(_))
        | ("float", n @ Node::Float(_))
        | ("bool", n @ Node::Bool(_))
        | ("null", n @ Node::Null) => Ok(n),
        ("float", Node::Int(i)) => Ok(Node::Float(i as f64)),
        _ => Err(format!("the tag {} on {value:?}", show_tag(tag))),
    }
}

/// go-yaml v2's resolution of an untagged plain scalar (what kubectl reads).
/// Timestamps stay strings: go-yaml v2 keeps them as strings when decoding
/// into interface{}, which is what sigs.k8s.io/yaml does.
fn resolve_plain(v: &str) -> Node {
    match v {
        "" | "~" | "null" | "Null" | "NULL" => return Node::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" => {
            return Node::Bool(true);
        }
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False" | "FALSE" => {
            return Node::Bool(false);
        }
        ".nan" | ".NaN" | ".NAN" => return Node::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Node::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Node::Float(f64::NEG_INFINITY),
        _ => {}
    }
    if !v.starts_with(|c: char| c == '+' || c == '-' || c == '.' || c.is_ascii_digit()) {
        return Node::Str(v.to_string());
    }
    let plain: String = v.chars().filter(|c| *c != '_').collect();
    if let Some(i) = parse_go_int(&plain) {
        return Node::Int(i);
    }
    if is_yaml_float(&plain)
        && let Ok(f) = plain.parse::<f64>()
    {
        return Node::Float(f);
    }
    Node::Str(v.to_string())
}

/// Go's `strconv.ParseInt(s, 0, 64)`: sign, then `0x`, `0o`, `0b`, a leading
/// `0` for octal, or decimal.
fn parse_go_int(s: &str) -> Option<i64> {
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, body) = if let Some(rest) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        (16, rest)
    } else if let Some(rest) = digits
        .strip_prefix("0o")
        .or_else(|| digits.strip_prefix("0O"))
    {
        (8, rest)
    } else if let Some(rest) = digits
        .strip_prefix("0b")
        .or_else(|| digits.strip_prefix("0B"))
    {
        (2, rest)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = i128::from_str_radix(body, radix).ok()?;
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

/// go-yaml's float syntax: `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`.
fn is_yaml_float(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", frac)) => digits(frac),
        Some((int, frac)) => digits(int) && (frac.is_empty() || digits(frac)),
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e)));
    mantissa_ok && exponent_ok
}

// ---------------------------------------------------------------------------
// Emitting

/// Block style in kubectl's layout (sequences under a key are not indented).
fn emit_document(out: &mut String, root: &Node) {
    match root {
        Node::Map(entries) if !entries.is_empty() => emit_map(out, entries, 0, false),
        Node::Seq(items) if !items.is_empty() => emit_seq(out, items, 0, false),
        scalar => {
            emit_scalar(out, scalar, 0);
            out.push('\n');
        }
    }
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// `first_inline`: the first entry continues a line already started (`- `).
fn emit_map(out: &mut String, entries: &[(String, Node)], at: usize, first_inline: bool) {
    for (i, (key, value)) in entries.iter().enumerate() {
        if i > 0 || !first_inline {
            indent(out, at);
        }
        emit_string(out, key);
        out.push(':');
        match value {
            Node::Map(m) if !m.is_empty() => {
                out.push('\n');
                emit_map(out, m, at + 2, false);
            }
            Node::Seq(items) if !items.is_empty() => {
                out.push('\n');
                emit_seq(out, items, at, false);
            }
            scalar => {
                out.push(' ');
                emit_scalar(out, scalar, at + 2);
                out.push('\n');
            }
        }
    }
}

fn emit_seq(out: &mut String, items: &[Node], at: usize, first_inline: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !first_inline {
            indent(out, at);
        }
        out.push_str("- ");
        match item {
            Node::Map(m) if !m.is_empty() => emit_map(out, m, at + 2, true),
            Node::Seq(s) if !s.is_empty() => emit_seq(out, s, at + 2, true),
            scalar => {
                emit_scalar(out, scalar, at + 2);
                out.push('\n');
            }
        }
    }
}

/// A scalar (or an empty collection) without its line break. `block_at` is
/// the indentation of a literal block's lines.
fn emit_scalar(out: &mut String, node: &Node, block_at: usize) {
    match node {
        Node::Null => out.push_str("null"),
        Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Node::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Node::Float(f) => out.push_str(&format_float(*f)),
        Node::Str(v) if literal_block_ok(v) => {
            out.push_str(if v.ends_with('\n') { "|" } else { "|-" });
            for line in v.strip_suffix('\n').unwrap_or(v).split('\n') {
                out.push('\n');
                if !line.is_empty() {
                    indent(out, block_at);
                    out.push_str(line);
                }
            }
        }
        Node::Str(v) => emit_string(out, v),
        Node::Seq(_) => out.push_str("[]"),
        Node::Map(_) => out.push_str("{}"),
    }
}

fn format_float(f: f64) -> String {
    if f.is_nan() {
        ".nan".into()
    } else if f.is_infinite() {
        if f > 0.0 { ".inf" } else { "-.inf" }.into()
    } else {
        // Debug is the shortest repr that reads back exactly, always with a
        // `.` or an exponent, so it stays a float.
        format!("{f:?}")
    }
}

/// Multi-line text reads best as `|`; only when the block reproduces it
/// exactly (one or no final line break, first line not indented, no
/// characters a block cannot carry).
fn literal_block_ok(v: &str) -> bool {
    v.contains('\n')
        && !v.ends_with("\n\n")
        && !v.starts_with([' ', '\t', '\n'])
        && v.chars().all(|c| c == '\n' || c == '\t' || is_printable(c))
        && !v.contains(" \n")
        && !v.ends_with(' ')
}

fn is_printable(c: char) -> bool {
    !(c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}'))
}

/// A string as a plain scalar when every YAML reader takes it for that same
/// string, else double-quoted.
fn emit_string(out: &mut String, v: &str) {
    if plain_ok(v) {
        out.push_str(v);
        return;
    }
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            '\u{85}' => out.push_str("\\N"),
            c if (c as u32) < 0x100 && !is_printable(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if !is_printable(c) => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn plain_ok(v: &str) -> bool {
    let mut chars = v.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let second = chars.next();
    let start_ok = if first.is_ascii_alphabetic() || matches!(first, '/' | '_' | '$') {
        // Rules out every indicator, number, null, .inf and timestamp form
        // of YAML 1.1 and 1.2; only the word forms remain to check.
        let reserved = ["y", "n", "yes", "no", "on", "off", "true", "false", "null"];
        !reserved.iter().any(|r| v.eq_ignore_ascii_case(r))
    } else if first.is_ascii_digit() {
        // Quantities like `100m` or `2Gi`: a letter and no `-`, `:` or `_`
        // keep them clear of timestamps, sexagesimals and 1.1 floats like
        // `1.2.3`; what go-yaml would still take for a number is refused.
        v.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
            && v.chars().any(|c| c.is_ascii_alphabetic())
            && matches!(resolve_plain(v), Node::Str(_))
    } else if first == '-' {
        // Flags like `--config`: `-` is an indicator only before a space.
        second.is_some_and(|c| c.is_ascii_alphabetic() || c == '-')
            && !v.starts_with("---")
            && matches!(resolve_plain(v), Node::Str(_))
    } else {
        false
    };
    start_ok
        && v.chars().all(|c| c != '\t' && is_printable(c))
        && !v.contains(": ")
        && !v.contains(" #")
        && !v.ends_with([':', ' '])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(yaml: &str) -> Node {
        load(yaml, 1).ok().flatten().map(|l| l.root).unwrap()
    }

    #[test]
    fn plain_scalars_resolve_like_kubectl() {
        let cases = [
            ("0644", Node::Int(420)),
            ("0o644", Node::Int(420)),
            ("0x1F", Node::Int(31)),
            ("-12", Node::Int(-12)),
            ("1_000", Node::Int(1000)),
            ("08", Node::Float(8.0)),
            ("1e3", Node::Float(1000.0)),
            ("0.5", Node::Float(0.5)),
            ("yes", Node::Bool(true)),
            ("Off", Node::Bool(false)),
            ("~", Node::Null),
            ("1:20", Node::Str("1:20".into())),
            ("2024-01-01", Node::Str("2024-01-01".into())),
            ("nginx:1.25", Node::Str("nginx:1.25".into())),
        ];
        for (text, want) in cases {
            assert_eq!(resolve_plain(text), want, "{text}");
        }
    }

    #[test]
    fn quoted_and_tagged_scalars() {
        let r = root("a: '0644'\nb: \"yes\"\nc: !!str 12\nd: !!int '12'\ne: |\n  x\n");
        assert_eq!(r.get("a"), Some(&s("0644")));
        assert_eq!(r.get("b"), Some(&s("yes")));
        assert_eq!(r.get("c"), Some(&s("12")));
        assert_eq!(r.get("d"), Some(&Node::Int(12)));
        assert_eq!(r.get("e"), Some(&s("x\n")));
    }

    #[test]
    fn emitted_strings_read_back_identically() {
        let strings = [
            "yes",
            "No",
            "on",
            "0644",
            "1e3",
            "-x",
            "- x",
            "a: b",
            "a #b",
            "#x",
            "",
            " x",
            "x ",
            "plain",
            "/etc/touchgate",
            "a\nb\n",
            "a\nb",
            "  indented\n",
            "tab\there",
            "quote\"s",
            "back\\slash",
            "é",
            "\u{1}",
            "a\n\n",
            "null",
            "~",
            "@x",
            "`x",
            "%x",
            "!x",
            "&x",
            "*x",
            "{x}",
            "[x]",
            "'x'",
            "x:",
            "2024-01-01",
            "1:20",
            ".inf",
            "+1",
            "$(VAR)",
            "a,b",
            "100m",
            "2Gi",
            "1e3",
            "1E3",
            "0x1F",
            "0b1",
            "0o7",
            "1.2.3",
            "12",
            "1.5",
            "--config",
            "-1",
            "-e3",
            "-.inf",
            "-",
            "--",
            "- -x",
            "--- x",
            "---",
            "3d",
            "1_000",
            "v1.2",
            "x\u{2028}y",
        ];
        for v in strings {
            let mut out = String::from("k: ");
            emit_scalar(&mut out, &s(v), 2);
            out.push('\n');
            let back = root(&out);
            assert_eq!(back.get("k"), Some(&s(v)), "{v:?} emitted as {out:?}");
        }
    }

    proptest::proptest! {
        /// Whatever a string holds, the emitter writes it so that it reads
        /// back as that same string, as a value and as a key.
        #[test]
        fn any_string_round_trips(
            v in "\\PC{0,24}|[-:#'\"\n\t yYnNoO0-9.eExX+_~\\[\\]{}|>!&*%@`,/$]{0,12}"
        ) {
            let doc = Node::Map(vec![
                ("a-key-longer-than-any-generated-one".into(), Node::Str(v.clone())),
                (v.clone(), Node::Seq(vec![Node::Str(v.clone())])),
            ]);
            let mut out = String::new();
            emit_document(&mut out, &doc);
            let back = load(&out, 1).ok().flatten().map(|l| l.root);
            proptest::prop_assert_eq!(back, Some(doc), "{}", out);
        }
    }

    #[test]
    fn merge_keys_and_aliases() {
        let r = root("base: &b\n  a: 1\n  b: 2\nthing:\n  <<: *b\n  b: 3\n  y: 4\n");
        // `y` is a YAML 1.1 boolean: kubectl reads the key as "true".
        assert_eq!(
            r.get("thing"),
            Some(&Node::Map(vec![
                ("a".into(), Node::Int(1)),
                ("b".into(), Node::Int(3)),
                ("true".into(), Node::Int(4)),
            ]))
        );
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut yaml = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let p = i - 1;
            let _ = writeln!(
                yaml,
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]"
            );
        }
        assert!(load(&yaml, 1).is_err());
    }

    #[test]
    fn split_keeps_every_byte() {
        let input = "# lead\n---\na: 1\n...\n%YAML 1.2\n---\nb: 2\n---\n# only a comment\n";
        let chunks = split_documents(input);
        let joined: String = chunks.iter().map(|c| c.text).collect();
        assert_eq!(joined, input);
        assert_eq!(chunks.len(), 4);
        assert!(chunks[1].has_end_marker);
        assert!(chunks[2].text.starts_with("%YAML"));
        assert_eq!(chunks[2].first_line, 5);
    }

    #[test]
    fn app_port_parses_names_and_numbers() {
        assert_eq!("http".parse(), Ok(AppPort::Name("http".into())));
        assert_eq!("3000".parse(), Ok(AppPort::Number(3000)));
        assert!("0".parse::<AppPort>().is_err());
        assert!("70000".parse::<AppPort>().is_err());
        assert!("Not_A_Name".parse::<AppPort>().is_err());
    }
}
