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
//! The patch itself is [`patch_pod_spec`]: a pure function from a pod spec,
//! as JSON, and the options to the patched pod spec, which knows nothing of
//! YAML. The sidecar and its volumes are built as the `k8s-openapi` types.
//! Reading and writing the YAML the way kubectl does is `yaml.rs`.

mod yaml;

use std::str::FromStr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction, Lifecycle, LifecycleHandler, Probe,
    ResourceRequirements, SeccompProfile, SecretEnvSource, SecretKeySelector, SecurityContext,
    SleepAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use yaml::{Chunk, Loaded, Node};

/// Container, port and volume names the sidecar adds; one of them already in
/// a pod means "already injected" (the container) or a conflict (the rest).
pub const CONTAINER_NAME: &str = "touchgate";
pub const PROXY_PORT_NAME: &str = "touchgate";
pub const ADMIN_PORT_NAME: &str = "tg-admin";
/// The new name of the app's port when touchgate takes over its name, so
/// that Services and NetworkPolicies naming the port reach touchgate.
pub const APP_PORT_NAME: &str = "tg-app";
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

/// The sidecar options of `touchgate inject` and `touchgate injector`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SidecarArgs {
    /// The classic sidecar form (a regular container) instead of a native
    /// sidecar (initContainers with restartPolicy: Always).
    #[arg(long)]
    pub classic: bool,
    /// The app's container port (name or number) to route through touchgate.
    #[arg(long)]
    pub app_port: Option<AppPort>,
    #[arg(long)]
    pub image: Option<String>,
    #[arg(long)]
    pub config_map: Option<String>,
    #[arg(long)]
    pub secret: Option<String>,
}

impl SidecarArgs {
    /// The options these arguments give, defaults for the rest.
    pub fn options(&self) -> InjectOptions {
        let defaults = InjectOptions::default();
        InjectOptions {
            classic: self.classic,
            app_port: self.app_port.clone(),
            image: self.image.clone().unwrap_or(defaults.image.clone()),
            config_map: self
                .config_map
                .clone()
                .unwrap_or(defaults.config_map.clone()),
            secret: self.secret.clone().unwrap_or(defaults.secret.clone()),
            ..defaults
        }
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
    let chunks = yaml::split_documents(input);
    let mut docs = Vec::with_capacity(chunks.len());
    let mut number = 0;
    for chunk in &chunks {
        let loaded = yaml::load(chunk.text, chunk.first_line).map_err(|e| InjectError::Parse {
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
                yaml::emit_document(&mut out, &loaded.root);
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
    port: AppPortOfPod,
}

/// Where keys the patch adds to a pod spec go in the written YAML: the
/// sidecar's `initContainers` before `containers`, the order they start in;
/// `volumes`, then `terminationGracePeriodSeconds`, at the end.
const POD_SPEC_LAYOUT: &[(&str, Option<&str>)] = &[
    ("initContainers", Some("containers")),
    ("volumes", None),
    ("terminationGracePeriodSeconds", None),
];

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
    let spec_json = spec.to_json().map_err(|e| {
        format!(
            "{prefix}spec.{}: {} is not a number JSON can hold, and the API server reads JSON",
            e.path, e.value
        )
    })?;
    let (changed, port) = match patch_pod_spec(&spec_json, opts) {
        Ok(PodPatch::Injected {
            spec: patched,
            port,
        }) => {
            spec.update_from(&patched, POD_SPEC_LAYOUT);
            (true, Some(port))
        }
        Ok(PodPatch::AlreadyInjected { port }) => (false, port),
        Err(e) => return Err(format!("{prefix}spec.{e}")),
    };
    if let Some(port) = port {
        targets.push(AppTarget {
            namespace,
            labels,
            port,
        });
    }
    Ok(changed)
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
// Pod specs

/// The app's port in a pod: its number, its name when a container declares
/// it, and the name of touchgate's port that traffic for it must go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPortOfPod {
    /// The name Services target the app by: the app port's name before
    /// injection (touchgate's port carries it after).
    pub name: Option<String>,
    pub number: u16,
    /// The name of touchgate's proxy port: the app port's former name, or
    /// [`PROXY_PORT_NAME`] when the app port had none.
    pub proxy_name: String,
}

/// What [`patch_pod_spec`] made of a pod spec.
#[derive(Debug, Clone, PartialEq)]
pub enum PodPatch {
    /// The sidecar, its volumes and the grace period were added: the
    /// patched pod spec, and the app port the sidecar forwards to.
    Injected { spec: Value, port: AppPortOfPod },
    /// A container named `touchgate` is there already: the pod is left as
    /// it is. The app port that sidecar forwards to, when it can be told.
    AlreadyInjected { port: Option<AppPortOfPod> },
}

/// Why a pod spec cannot be injected; the message names the field relative
/// to the pod spec (`containers[0] ("web"): …`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PodSpecError(String);

impl From<String> for PodSpecError {
    fn from(message: String) -> Self {
        PodSpecError(message)
    }
}

impl From<&str> for PodSpecError {
    fn from(message: &str) -> Self {
        PodSpecError(message.to_string())
    }
}

/// Add the sidecar, its volumes and the grace period to `spec`, a pod spec
/// as JSON (`spec` of a Pod, `spec.template.spec` of a Deployment). The
/// result depends on nothing but the spec and the options, so that the
/// JSON patch of an admission review is the difference between `spec` and
/// the patched spec, and `inject` writes the same change into its YAML.
pub fn patch_pod_spec(spec: &Value, opts: &InjectOptions) -> Result<PodPatch, PodSpecError> {
    let containers = match spec.get("containers") {
        Some(Value::Array(c)) if !c.is_empty() => &c[..],
        Some(Value::Array(_)) => return Err("containers is empty".into()),
        Some(_) => return Err("containers is not a list".into()),
        None => return Err("containers is missing".into()),
    };
    let init_containers = match spec.get("initContainers") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(c)) => &c[..],
        Some(_) => return Err("initContainers is not a list".into()),
    };
    for (field, list) in [
        ("containers", containers),
        ("initContainers", init_containers),
    ] {
        for (i, c) in list.iter().enumerate() {
            if !c.is_object() {
                return Err(format!("{field}[{i}] is not a mapping").into());
            }
        }
    }
    let named = |c: &&Value| c.get("name").and_then(Value::as_str) == Some(CONTAINER_NAME);
    if let Some(sidecar) = containers.iter().chain(init_containers).find(named) {
        return Ok(PodPatch::AlreadyInjected {
            port: existing_app_port(sidecar, containers),
        });
    }

    let port = app_port(containers, opts.app_port.as_ref())?;
    check_conflicts(containers, init_containers, port.number)?;
    let volumes = match spec.get("volumes") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(v)) => &v[..],
        Some(_) => return Err("volumes is not a list".into()),
    };
    for v in volumes {
        if let Some(name @ (CONFIG_VOLUME | SPOOL_VOLUME)) = v.get("name").and_then(Value::as_str) {
            return Err(format!("a volume named {name:?} already exists").into());
        }
    }
    let current_grace = match spec.get("terminationGracePeriodSeconds") {
        None | Some(Value::Null) => None,
        Some(n) => match n.as_i64() {
            Some(n) => Some(n),
            None => return Err("terminationGracePeriodSeconds is not an integer".into()),
        },
    };

    if opts.classic && spec.get("restartPolicy").and_then(Value::as_str) != Some("Always") {
        // A Job's pod completes when all its containers exit; a classic
        // sidecar never does. The native form is terminated for it.
        tracing::warn!(
            "classic sidecar in a pod with restartPolicy other than Always (a Job?): \
             the pod will not complete while touchgate runs; prefer the native form"
        );
    }
    let mut patched = spec.clone();
    let Value::Object(fields) = &mut patched else {
        // `containers` was found above, so the spec is an object.
        return Err("the pod spec is not a mapping".into());
    };
    if let Some(name) = &port.name {
        take_port_name(fields, name)?;
    }
    let sidecar = json(&sidecar_container(opts, port.number, &port.proxy_name))?;
    if opts.classic {
        push(fields, "containers", [sidecar]);
    } else {
        match fields.get_mut("initContainers") {
            Some(Value::Array(c)) => c.insert(0, sidecar),
            _ => {
                fields.insert("initContainers".into(), Value::Array(vec![sidecar]));
            }
        }
    }
    push(
        fields,
        "volumes",
        sidecar_volumes(opts)
            .iter()
            .map(json)
            .collect::<Result<Vec<_>, _>>()?,
    );
    let grace = grace_period_secs(opts);
    if current_grace.is_none_or(|n| n < grace) {
        fields.insert("terminationGracePeriodSeconds".into(), Value::from(grace));
    }
    Ok(PodPatch::Injected {
        spec: patched,
        port,
    })
}

/// Rename the app's port `name` to [`APP_PORT_NAME`], in its declaration and
/// wherever its own container's probes and hooks name it (a named probe port
/// is looked up in the container's own ports), so that touchgate's port can
/// carry `name`: a Service or NetworkPolicy naming it then reaches touchgate
/// unchanged.
fn take_port_name(
    fields: &mut serde_json::Map<String, Value>,
    name: &str,
) -> Result<(), PodSpecError> {
    let Some(Value::Array(containers)) = fields.get_mut("containers") else {
        return Err("containers is not a list".into());
    };
    let declares = |c: &Value| {
        declared_ports(c)
            .iter()
            .any(|(n, _)| n.as_deref() == Some(name))
    };
    let Some(app) = containers.iter_mut().find(|c| declares(c)) else {
        return Err(format!("containers: no container declares a port named {name:?}").into());
    };
    if let Some(Value::Array(ports)) = app.get_mut("ports") {
        for p in ports {
            if p.get("name").and_then(Value::as_str) == Some(name) {
                p["name"] = Value::from(APP_PORT_NAME);
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        rename_handler_port(app.get_mut(probe), name);
    }
    if let Some(lifecycle) = app.get_mut("lifecycle") {
        for hook in ["postStart", "preStop"] {
            rename_handler_port(lifecycle.get_mut(hook), name);
        }
    }
    Ok(())
}

/// Point a probe's or hook's `httpGet`/`tcpSocket` port named `name` at
/// [`APP_PORT_NAME`].
fn rename_handler_port(handler: Option<&mut Value>, name: &str) {
    let Some(handler) = handler else { return };
    for action in ["httpGet", "tcpSocket"] {
        if let Some(port) = handler.get_mut(action).and_then(|a| a.get_mut("port"))
            && port.as_str() == Some(name)
        {
            *port = Value::from(APP_PORT_NAME);
        }
    }
}

/// Append `items` to the list at `key`, or make it the list.
fn push(
    fields: &mut serde_json::Map<String, Value>,
    key: &str,
    items: impl IntoIterator<Item = Value>,
) {
    match fields.get_mut(key) {
        Some(Value::Array(list)) => list.extend(items),
        _ => {
            fields.insert(key.into(), Value::Array(items.into_iter().collect()));
        }
    }
}

/// A Kubernetes object as JSON, in the key order its type writes.
fn json(object: &impl serde::Serialize) -> Result<Value, PodSpecError> {
    serde_json::to_value(object).map_err(|e| format!("cannot write the sidecar: {e}").into())
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

/// The ports a container declares, as `(name, number)`; the number is
/// `None` when `containerPort` is missing or no port number.
fn declared_ports(c: &Value) -> Vec<(Option<String>, Option<u16>)> {
    match c.get("ports") {
        Some(Value::Array(ports)) => ports
            .iter()
            .map(|p| {
                let name = p.get("name").and_then(Value::as_str).map(str::to_string);
                let number = p
                    .get("containerPort")
                    .and_then(Value::as_i64)
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|n| *n > 0);
                (name, number)
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn container_name(c: &Value) -> &str {
    c.get("name").and_then(Value::as_str).unwrap_or("")
}

fn app_port(containers: &[Value], wanted: Option<&AppPort>) -> Result<AppPortOfPod, String> {
    let found = |name: Option<String>, number| AppPortOfPod {
        proxy_name: name.clone().unwrap_or_else(|| PROXY_PORT_NAME.into()),
        name,
        number,
    };
    match wanted {
        None => {
            let first = &containers[0];
            match declared_ports(first).into_iter().next() {
                Some((name, Some(number))) => Ok(found(name, number)),
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
                for (name, number) in declared_ports(c) {
                    if name.as_deref() == Some(wanted.as_str()) {
                        return match number {
                            Some(n) => Ok(found(name, n)),
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
            .flat_map(declared_ports)
            .find(|(_, n)| *n == Some(*wanted))
            .map_or(found(None, *wanted), |(name, _)| found(name, *wanted))),
    }
}

/// The pod shares one network namespace: touchgate's ports and port names
/// must be free.
fn check_conflicts(containers: &[Value], init: &[Value], app_port: u16) -> Result<(), String> {
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
            let Some(Value::Array(ports)) = c.get("ports") else {
                continue;
            };
            for p in ports {
                if let Some(n) = p.get("containerPort").and_then(Value::as_i64)
                    && (n == i64::from(PROXY_PORT) || n == i64::from(ADMIN_PORT))
                {
                    return Err(format!(
                        "{field}[{i}] declares port {n}, which the touchgate sidecar \
                         listens on (containers of a pod share its ports)"
                    ));
                }
                if let Some(name @ (PROXY_PORT_NAME | ADMIN_PORT_NAME | APP_PORT_NAME)) =
                    p.get("name").and_then(Value::as_str)
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

/// The app port of a pod injected earlier, from the sidecar's upstream, and
/// the name of the sidecar's proxy port.
fn existing_app_port(sidecar: &Value, containers: &[Value]) -> Option<AppPortOfPod> {
    let proxy_name = declared_ports(sidecar)
        .into_iter()
        .find(|(_, n)| *n == Some(PROXY_PORT))
        .and_then(|(name, _)| name)
        .unwrap_or_else(|| PROXY_PORT_NAME.into());
    let upstream = sidecar
        .get("env")?
        .as_array()?
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some("TOUCHGATE_UPSTREAM"))?
        .get("value")?
        .as_str()?;
    let number: u16 = upstream
        .rsplit_once(':')?
        .1
        .trim_end_matches('/')
        .parse()
        .ok()?;
    let app = app_port(containers, Some(&AppPort::Number(number))).ok()?;
    Some(if app.name.as_deref() == Some(APP_PORT_NAME) {
        // touchgate took over the app port's name: Services target that.
        AppPortOfPod {
            name: Some(proxy_name.clone()),
            number,
            proxy_name,
        }
    } else {
        AppPortOfPod { proxy_name, ..app }
    })
}

/// The sidecar: touchgate in front of the app on `app_port`, its config
/// from the ConfigMap, its secrets from the Secret, its spool on an
/// `emptyDir`, probed on the admin port.
fn sidecar_container(opts: &InjectOptions, app_port: u16, proxy_name: &str) -> Container {
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(ADMIN_PORT_NAME.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    let port = |name: &str, number: u16| ContainerPort {
        name: Some(name.into()),
        container_port: i32::from(number),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    };
    let quantities = |cpu: &str, memory: &str| {
        [("cpu", cpu), ("memory", memory)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.into())))
            .collect()
    };
    let prestop = prestop_secs(opts);
    Container {
        name: CONTAINER_NAME.into(),
        image: Some(opts.image.clone()),
        args: Some(vec![
            "run".into(),
            "--config".into(),
            format!("{CONFIG_DIR}/touchgate.toml"),
        ]),
        ports: Some(vec![
            port(proxy_name, PROXY_PORT),
            port(ADMIN_PORT_NAME, ADMIN_PORT),
        ]),
        env: Some(vec![
            EnvVar {
                name: "TOUCHGATE_SECRET".into(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: opts.secret.clone(),
                        key: "TOUCHGATE_SECRET".into(),
                        optional: None,
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            },
            EnvVar {
                name: "TOUCHGATE_UPSTREAM".into(),
                value: Some(format!("http://127.0.0.1:{app_port}")),
                ..EnvVar::default()
            },
        ]),
        env_from: Some(vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: opts.secret.clone(),
                optional: None,
            }),
            ..EnvFromSource::default()
        }]),
        // Native sidecar: the app's containers start only once this passes.
        startup_probe: Some(probe("/healthz", 1, 30)),
        readiness_probe: Some(probe("/readyz", 5, 2)),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        resources: Some(ResourceRequirements {
            requests: Some(quantities("100m", "128Mi")),
            limits: Some(quantities("1", "256Mi")),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            run_as_group: Some(65532),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: CONFIG_VOLUME.into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: SPOOL_VOLUME.into(),
                mount_path: SPOOL_DIR.into(),
                ..VolumeMount::default()
            },
        ]),
        // The `sleep` action (Kubernetes ≥ 1.30): the distroless image has
        // no shell and no sleep binary for an `exec` hook.
        lifecycle: (prestop > 0).then(|| Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: i64::try_from(prestop).unwrap_or(i64::MAX),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        restart_policy: (!opts.classic).then(|| "Always".into()),
        ..Container::default()
    }
}

/// The ConfigMap with `touchgate.toml`, and the spool's `emptyDir`.
fn sidecar_volumes(opts: &InjectOptions) -> [Volume; 2] {
    [
        Volume {
            name: CONFIG_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: opts.config_map.clone(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: SPOOL_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("2Gi".into())),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        },
    ]
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
        // A target by the name touchgate's port carries reaches it already.
        let hit = selected.iter().find(|t| match target {
            Some(Node::Int(n)) => *n == i64::from(t.port.number),
            Some(Node::Str(name)) => {
                t.port.name.as_deref() == Some(name.as_str()) && *name != t.port.proxy_name
            }
            _ => false,
        });
        if let Some(t) = hit {
            let to = yaml::s(&t.port.proxy_name);
            if port.get("targetPort").is_some() {
                port.set("targetPort", to);
            } else {
                port.insert_after("port", "targetPort", to);
            }
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_port_parses_names_and_numbers() {
        assert_eq!("http".parse(), Ok(AppPort::Name("http".into())));
        assert_eq!("3000".parse(), Ok(AppPort::Number(3000)));
        assert!("0".parse::<AppPort>().is_err());
        assert!("70000".parse::<AppPort>().is_err());
        assert!("Not_A_Name".parse::<AppPort>().is_err());
    }

    fn pod_spec() -> Value {
        serde_json::json!({
            "containers": [{"name": "app", "image": "app", "ports": [{"name": "http", "containerPort": 3000}]}],
            "volumes": [{"name": "data", "emptyDir": {}}],
        })
    }

    #[test]
    fn the_patch_is_a_pure_function_of_the_spec_and_the_options() {
        let spec = pod_spec();
        let opts = InjectOptions::default();
        let once = patch_pod_spec(&spec, &opts).unwrap();
        assert_eq!(patch_pod_spec(&spec, &opts).unwrap(), once);
        let PodPatch::Injected {
            spec: patched,
            port,
        } = once
        else {
            panic!("not injected: {once:?}");
        };
        assert_eq!(
            port,
            AppPortOfPod {
                name: Some("http".into()),
                number: 3000,
                proxy_name: "http".into(),
            }
        );
        // What an admission webhook's JSON patch holds: the app's container
        // as it was but for its port's name, which touchgate's port takes;
        // its volume as it was, the rest added.
        let mut app = spec["containers"].clone();
        app[0]["ports"][0]["name"] = Value::from(APP_PORT_NAME);
        assert_eq!(patched["containers"], app);
        assert_eq!(patched["initContainers"][0]["ports"][0]["name"], "http");
        assert_eq!(patched["volumes"][0], spec["volumes"][0]);
        assert_eq!(patched["initContainers"][0]["name"], CONTAINER_NAME);
        assert_eq!(patched["volumes"][1]["name"], CONFIG_VOLUME);
        assert_eq!(patched["volumes"][2]["name"], SPOOL_VOLUME);
        assert!(patched["terminationGracePeriodSeconds"].is_i64());
        // A patched spec is already injected: nothing more to add.
        assert_eq!(
            patch_pod_spec(&patched, &opts).unwrap(),
            PodPatch::AlreadyInjected { port: Some(port) }
        );
        assert_eq!(
            patch_pod_spec(&serde_json::json!({"containers": []}), &opts)
                .unwrap_err()
                .to_string(),
            "containers is empty"
        );
    }

    #[test]
    fn the_sidecar_as_json_keeps_the_key_order_its_type_writes() {
        let sidecar = sidecar_container(&InjectOptions::default(), 3000, PROXY_PORT_NAME);
        let direct = serde_json::to_string(&sidecar).unwrap();
        let through_value = serde_json::to_string(&json(&sidecar).unwrap()).unwrap();
        assert_eq!(through_value, direct);
        let volumes = sidecar_volumes(&InjectOptions::default());
        assert_eq!(
            serde_json::to_string(&json(&volumes).unwrap()).unwrap(),
            serde_json::to_string(&volumes).unwrap()
        );
    }
}
