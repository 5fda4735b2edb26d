//! The Grafana dashboards in grafana/dashboards/ against the metrics the code exports.
//!
//! A dashboard whose queries name metrics nobody exports shows "No data" exactly when an
//! operator needs it, so:
//!
//! - `dashboards_are_well_formed_and_use_only_contract_metrics` (no processes): every panel
//!   has a query and the provisioned datasource, every template variable it uses exists, and
//!   every metric name in every query is in [`CONTRACT`] (the metric catalogue of issue 4) or
//!   is one of etcd's or Prometheus's own ([`OTHER_METRICS`]).
//! - `every_dashboard_query_returns_data_from_a_real_prometheus`: a real cluster (etcd, 3
//!   storage nodes, 2 proxies, every process with `--metrics-addr`), a real Prometheus
//!   scraping all of them every second, client load through both proxies (reads, writes,
//!   misses, expiring keys, errors), a live map change and a storage node killed (so the
//!   failure, watch and epoch panels have something to show). Then every scraped `/metrics`
//!   is checked against [`CONTRACT`] (names, types, label names, label values), and every
//!   query of every panel and every template variable, with Grafana's variables substituted,
//!   is evaluated through `/api/v1/query`: the test fails listing each one that errors or
//!   returns no series. Renaming a metric in the code without the dashboards fails here.
//!
//! Run alone: `cargo test --release --workspace --test monitoring -- --nocapture` (prints every
//! query with its number of series). Needs Debian's `prometheus` (`scripts/install-deps.sh
//! test`) or `$PROMETHEUS_BIN`.

#[path = "../../common/tests/support/checkout.rs"]
mod checkout;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ringkv_integration::cluster::Cluster;
use ringkv_integration::prometheus::{
    discover_metrics_addr, parse_exposition, promql_metric_names, scrape, Prometheus, Sample,
};
use ringkv_integration::{poll_until, Reply, RespClient};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// The metrics contract
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Which processes export a metric (in the cluster this test runs; the standalone `ringkv`
/// exports the union of the client and storage metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exporter {
    Proxy,
    Storage,
    Both,
}

/// When a series exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Presence {
    /// From start-up, or after the load this test drives: the test fails if it is missing.
    Always,
    /// Only after an event this test cannot force deterministically (a MOVED/STALE race, a
    /// rejected connection, a reconnect): its labels are checked when it is there, and the
    /// dashboards must query it as `… or vector(0)`.
    OnEvent,
}

struct Metric {
    name: &'static str,
    kind: Kind,
    /// Label names of every series (`le` of histogram buckets aside).
    labels: &'static [&'static str],
    exporter: Exporter,
    presence: Presence,
}

const fn metric(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    exporter: Exporter,
    presence: Presence,
) -> Metric {
    Metric {
        name,
        kind,
        labels,
        exporter,
        presence,
    }
}

use Exporter::{Both, Proxy, Storage};
use Kind::{Counter, Gauge, Histogram};
use Presence::{Always, OnEvent};

/// Issue 4's metric catalogue: what `ringkv`, `ringkv-proxy` and `ringkv-storage` serve on
/// `--metrics-addr`. The dashboards may use only these (and [`OTHER_METRICS`]).
#[rustfmt::skip]
const CONTRACT: &[Metric] = &[
    // Client-facing (standalone and proxy).
    metric("ringkv_commands_total", Counter, &["command", "outcome"], Proxy, Always),
    metric("ringkv_command_duration_seconds", Histogram, &["command"], Proxy, Always),
    metric("ringkv_connected_clients", Gauge, &[], Both, Always),
    metric("ringkv_connections_total", Counter, &[], Proxy, Always),
    metric("ringkv_rejected_connections_total", Counter, &[], Proxy, OnEvent),
    metric("ringkv_net_input_bytes_total", Counter, &[], Proxy, Always),
    metric("ringkv_net_output_bytes_total", Counter, &[], Proxy, Always),
    // Proxy → storage.
    metric("ringkv_backend_connections", Gauge, &["node"], Proxy, Always),
    metric("ringkv_backend_in_flight_requests", Gauge, &["node"], Proxy, Always),
    metric("ringkv_backend_batches_total", Counter, &["node"], Proxy, Always),
    metric("ringkv_backend_batched_requests_total", Counter, &["node"], Proxy, Always),
    metric("ringkv_backend_retries_total", Counter, &["reason"], Proxy, OnEvent),
    // The test kills a storage node that serves shards: node_down is certain.
    metric("ringkv_backend_failures_total", Counter, &["node", "reason"], Proxy, Always),
    metric("ringkv_backend_reconnects_total", Counter, &["node"], Proxy, OnEvent),
    // Cluster state.
    metric("ringkv_map_epoch", Gauge, &[], Both, Always),
    metric("ringkv_etcd_up", Gauge, &[], Both, Always),
    // The test changes the map and adds a node: map and nodes events are certain.
    metric("ringkv_etcd_watch_events_total", Counter, &["watch", "kind"], Both, Always),
    metric("ringkv_cluster_nodes", Gauge, &[], Proxy, Always),
    metric("ringkv_served_shards", Gauge, &[], Storage, Always),
    // Storage (standalone and storage node).
    metric("ringkv_storage_operations_total", Counter, &["command"], Storage, Always),
    metric("ringkv_storage_duration_seconds", Histogram, &["command"], Storage, Always),
    metric("ringkv_shard_operations_total", Counter, &["shard"], Storage, Always),
    metric("ringkv_shard_keys", Gauge, &["shard"], Storage, Always),
    metric("ringkv_shard_bytes", Gauge, &["shard"], Storage, Always),
    metric("ringkv_rocksdb_memtable_bytes", Gauge, &[], Storage, Always),
    metric("ringkv_rocksdb_block_cache_bytes", Gauge, &[], Storage, Always),
    metric("ringkv_rocksdb_sst_bytes", Gauge, &[], Storage, Always),
    metric("ringkv_rocksdb_pending_compaction_bytes", Gauge, &[], Storage, Always),
    metric("ringkv_rocksdb_running_compactions", Gauge, &[], Storage, Always),
    metric("ringkv_rocksdb_write_stopped", Gauge, &[], Storage, Always),
    metric("ringkv_rocksdb_write_delayed", Gauge, &[], Storage, Always),
    metric("ringkv_counter_cache_entries", Gauge, &[], Storage, Always),
    // The load sets keys with a 100 ms TTL and waits for one to be swept.
    metric("ringkv_expired_keys_total", Counter, &[], Storage, Always),
    metric("ringkv_keyspace_hits_total", Counter, &[], Storage, Always),
    metric("ringkv_keyspace_misses_total", Counter, &[], Storage, Always),
    metric("ringkv_storage_refused_total", Counter, &["reason"], Storage, OnEvent),
    // Every process.
    metric("ringkv_build_info", Gauge, &["version", "role"], Both, Always),
];

/// The values a label may take, where the contract enumerates them.
#[rustfmt::skip]
const LABEL_VALUES: &[(&str, &str, &[&str])] = &[
    ("ringkv_commands_total", "outcome", &["ok", "error"]),
    ("ringkv_backend_retries_total", "reason", &["moved", "stale"]),
    ("ringkv_backend_failures_total", "reason", &["timeout", "node_down"]),
    ("ringkv_storage_refused_total", "reason", &["moved", "stale"]),
    ("ringkv_etcd_watch_events_total", "watch", &["map", "nodes"]),
    ("ringkv_etcd_watch_events_total", "kind",
     &["changed", "deleted", "invalid", "interrupted", "up", "down", "resync"]),
    ("ringkv_build_info", "role", &["standalone", "proxy", "storage"]),
];

/// Metrics the dashboards may use that ringkv does not export: Prometheus's own `up`, and
/// etcd's (scraped from its client port as job `etcd`; the cluster test checks they exist).
const OTHER_METRICS: &[&str] = &["up", "etcd_server_has_leader"];

/// The job names of grafana/prometheus.yml, which the test's own config repeats.
const JOBS: &[&str] = &["ringkv-proxy", "ringkv-storage", "etcd"];

/// What Grafana's interval variables become when the test evaluates a query. 30 s is what
/// `$__rate_interval` is for a 2 s scrape interval at the default resolution, and spans many of
/// the test's 1 s scrapes.
const GRAFANA_GLOBALS: &[(&str, &str)] = &[
    ("__rate_interval", "30s"),
    ("__interval", "15s"),
    ("__interval_ms", "15000"),
    ("__range", "5m"),
    ("__range_s", "300"),
    ("__range_ms", "300000"),
];

/// How long queries may take to return data once every target is up (rates need two samples
/// in their window; the events need their scrapes).
const QUERY_DEADLINE: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------------
// Dashboards
// ---------------------------------------------------------------------------------------------

/// The checkout the tests run from.
fn repo_root() -> PathBuf {
    checkout::manifest_dir()
        .parent()
        .expect("integration/ is inside the repository")
        .to_path_buf()
}

/// One query a dashboard runs: a panel target or a template variable's query.
#[derive(Clone, Debug)]
struct Query {
    /// `<dashboard file> / <panel title> / <refId>` or `… / variable <name>`.
    place: String,
    /// As written in the JSON.
    raw: String,
    /// With Grafana's variables substituted: what Prometheus evaluates.
    expr: String,
}

struct Dashboard {
    file: String,
    json: Value,
}

fn load_dashboards() -> Vec<Dashboard> {
    let dir = repo_root().join("grafana/dashboards");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("reading a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            Dashboard {
                file: path.file_name().unwrap().to_string_lossy().into_owned(),
                json,
            }
        })
        .collect()
}

/// Every panel, rows' nested panels included (a collapsed row keeps its panels inside it).
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The template variables of a dashboard: name → the value the test substitutes. Query
/// variables become `.*` (so `label=~"$var"` matches every value, as Grafana's "All" does);
/// custom, constant, interval and textbox variables their current value.
fn variables(dashboard: &Value) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = var["name"].as_str().unwrap_or_default().to_string();
        let current = match &var["current"]["value"] {
            Value::String(s) => Some(s.clone()),
            Value::Array(items) => items.first().and_then(Value::as_str).map(str::to_string),
            _ => None,
        };
        let value = match var["type"].as_str().unwrap_or_default() {
            "query" => ".*".to_string(),
            "datasource" => current.unwrap_or_else(|| "prometheus".into()),
            _ => current.unwrap_or_else(|| ".*".into()),
        };
        vars.insert(name, value);
    }
    for (name, value) in GRAFANA_GLOBALS {
        vars.insert(name.to_string(), value.to_string());
    }
    vars
}

/// `expr` with every `$name`, `${name}`, `${name:format}` and `[[name]]` replaced from
/// `vars`; an error naming the variables it does not know.
fn substitute(expr: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(expr.len());
    let mut unknown = Vec::new();
    let mut rest = expr;
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    while let Some(at) = rest.find(['$', '[']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let (name, len) = if let Some(inner) = tail.strip_prefix("${") {
            match inner.find('}') {
                Some(end) => (inner[..end].split(':').next().unwrap_or(""), end + 3),
                None => ("", 0),
            }
        } else if let Some(inner) = tail.strip_prefix("[[") {
            match inner.find("]]") {
                Some(end) if inner[..end].chars().all(is_name) => (&inner[..end], end + 4),
                _ => ("", 0),
            }
        } else if let Some(inner) = tail.strip_prefix('$') {
            let end = inner.find(|c: char| !is_name(c)).unwrap_or(inner.len());
            (&inner[..end], end + 1)
        } else {
            ("", 0)
        };
        if len == 0 || name.is_empty() {
            // A `[` of a range selector, or a lone `$` (a regex anchor in a string).
            out.push_str(&tail[..1]);
            rest = &tail[1..];
            continue;
        }
        match vars.get(name) {
            Some(value) => out.push_str(value),
            None => {
                unknown.push(name.to_string());
                out.push_str(&tail[..len]);
            }
        }
        rest = &tail[len..];
    }
    out.push_str(rest);
    if unknown.is_empty() {
        Ok(out)
    } else {
        Err(format!("unknown template variables {unknown:?}"))
    }
}

/// A template variable's query as PromQL: Grafana's `label_values(expr, label)` lists the
/// values of `label` among the series of `expr`, which `group by (label) (expr)` returns too.
fn variable_query_as_promql(query: &str) -> Option<String> {
    let query = query.trim();
    if let Some(inner) = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
    {
        return Some(match inner.rsplit_once(',') {
            Some((expr, label)) => format!("group by ({}) ({})", label.trim(), expr.trim()),
            None => format!("group by ({0}) ({{{0}!=\"\"}})", inner.trim()),
        });
    }
    if let Some(inner) = query
        .strip_prefix("query_result(")
        .and_then(|q| q.strip_suffix(')'))
    {
        return Some(inner.to_string());
    }
    None
}

/// Every query of every dashboard, substituted; panics on a variable it cannot resolve.
fn dashboard_queries(dashboards: &[Dashboard]) -> Vec<Query> {
    let mut queries = Vec::new();
    for dashboard in dashboards {
        let vars = variables(&dashboard.json);
        let mut add = |place: String, raw: &str| {
            let expr = substitute(raw, &vars).unwrap_or_else(|e| panic!("{place}: {e} in {raw}"));
            queries.push(Query {
                place,
                raw: raw.to_string(),
                expr,
            });
        };
        for panel in panels(&dashboard.json) {
            let title = panel["title"].as_str().unwrap_or("(untitled)");
            for target in panel["targets"].as_array().into_iter().flatten() {
                let ref_id = target["refId"].as_str().unwrap_or("?");
                let raw = target["expr"].as_str().unwrap_or_default();
                add(format!("{} / {title} / {ref_id}", dashboard.file), raw);
            }
        }
        for var in dashboard.json["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if var["type"] != "query" {
                continue;
            }
            let name = var["name"].as_str().unwrap_or_default();
            let raw = match &var["query"] {
                Value::String(s) => s.clone(),
                other => other["query"].as_str().unwrap_or_default().to_string(),
            };
            let place = format!("{} / variable {name}", dashboard.file);
            let promql = variable_query_as_promql(&raw)
                .unwrap_or_else(|| panic!("{place}: cannot evaluate variable query {raw:?}"));
            add(place, &promql);
        }
    }
    queries
}

/// A name as exported: histograms export `_bucket`, `_sum` and `_count` series.
fn contract_metric(name: &str) -> Option<&'static Metric> {
    CONTRACT.iter().find(|m| {
        m.name == name
            || (m.kind == Histogram
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(m.name)))
    })
}

#[test]
fn dashboards_are_well_formed_and_use_only_contract_metrics() {
    let dashboards = load_dashboards();
    let mut problems = Vec::new();
    let files: Vec<&str> = dashboards.iter().map(|d| d.file.as_str()).collect();
    for wanted in ["ringkv-overview.json", "ringkv-storage-node.json"] {
        if !files.contains(&wanted) {
            problems.push(format!("grafana/dashboards/{wanted} is missing"));
        }
    }
    let mut uids = BTreeSet::new();
    for dashboard in &dashboards {
        let json = &dashboard.json;
        let file = &dashboard.file;
        let uid = json["uid"].as_str().unwrap_or_default();
        if uid.is_empty() || !uids.insert(uid.to_string()) {
            problems.push(format!("{file}: missing or duplicate uid {uid:?}"));
        }
        if json["title"].as_str().unwrap_or_default().is_empty() {
            problems.push(format!("{file}: no title"));
        }
        if json["schemaVersion"].as_u64().unwrap_or(0) < 36 {
            problems.push(format!("{file}: schemaVersion below 36"));
        }
        let mut ids = BTreeSet::new();
        let mut targets = 0;
        for panel in panels(json) {
            let title = panel["title"].as_str().unwrap_or("(untitled)");
            let id = panel["id"].as_u64();
            if !id.is_some_and(|id| ids.insert(id)) {
                problems.push(format!("{file} / {title}: missing or duplicate panel id"));
            }
            if panel["type"] == "row" {
                continue;
            }
            let list = panel["targets"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                problems.push(format!("{file} / {title}: a panel without a query"));
            }
            for target in &list {
                targets += 1;
                if target["expr"]
                    .as_str()
                    .unwrap_or_default()
                    .trim()
                    .is_empty()
                {
                    problems.push(format!("{file} / {title}: a target without expr"));
                }
            }
            for ds in list
                .iter()
                .map(|t| &t["datasource"])
                .chain([&panel["datasource"]])
            {
                let ok = ds["type"] == "prometheus"
                    && matches!(ds["uid"].as_str(), Some("${DS}" | "prometheus"));
                if !ok {
                    problems.push(format!(
                        "{file} / {title}: datasource {ds} is not the Prometheus one (uid \
                         ${{DS}} or prometheus)"
                    ));
                }
            }
        }
        if targets == 0 {
            problems.push(format!("{file}: no queries at all"));
        }
    }
    // Substitution panics on unknown variables; then every name must be in the contract.
    for query in dashboard_queries(&dashboards) {
        if query.expr.contains('$') {
            problems.push(format!(
                "{}: `$` left after substitution: {}",
                query.place, query.expr
            ));
        }
        for name in promql_metric_names(&query.expr) {
            if contract_metric(&name).is_none() && !OTHER_METRICS.contains(&name.as_str()) {
                problems.push(format!(
                    "{}: metric {name} is not in the metrics contract: {}",
                    query.place, query.raw
                ));
            }
        }
    }
    // The provisioned datasource is the one the dashboards default to, and prometheus.yml has
    // the jobs they select.
    let datasource =
        fs::read_to_string(repo_root().join("grafana/provisioning/datasources/ringkv.yaml"))
            .expect("reading grafana/provisioning/datasources/ringkv.yaml");
    if !datasource.contains("uid: prometheus") || !datasource.contains("type: prometheus") {
        problems.push("the provisioned datasource is not a Prometheus with uid prometheus".into());
    }
    let provider =
        fs::read_to_string(repo_root().join("grafana/provisioning/dashboards/ringkv.yaml"))
            .expect("reading grafana/provisioning/dashboards/ringkv.yaml");
    if !provider.contains("type: file") {
        problems.push("the dashboard provider is not a file provider".into());
    }
    let prometheus_yml = fs::read_to_string(repo_root().join("grafana/prometheus.yml"))
        .expect("reading grafana/prometheus.yml");
    for job in JOBS {
        if !prometheus_yml.contains(&format!("job_name: {job}\n")) {
            problems.push(format!("grafana/prometheus.yml has no job {job}"));
        }
    }
    assert!(
        problems.is_empty(),
        "dashboard problems:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn template_substitution_and_variable_queries() {
    let vars: BTreeMap<String, String> = [("instance", ".*"), ("__rate_interval", "30s")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        substitute("rate(x{instance=~\"$instance\"}[$__rate_interval])", &vars).unwrap(),
        "rate(x{instance=~\".*\"}[30s])"
    );
    assert_eq!(
        substitute("x{a=~\"${instance:regex}\"}[[instance]] y[5m]", &vars).unwrap(),
        "x{a=~\".*\"}.* y[5m]"
    );
    assert!(substitute("x{a=\"$nope\"}", &vars).is_err());
    assert_eq!(
        variable_query_as_promql("label_values(ringkv_build_info{role=\"storage\"}, instance)")
            .unwrap(),
        "group by (instance) (ringkv_build_info{role=\"storage\"})"
    );
    assert_eq!(
        variable_query_as_promql("label_values(job)").unwrap(),
        "group by (job) ({job!=\"\"})"
    );
}

// ---------------------------------------------------------------------------------------------
// The cluster test
// ---------------------------------------------------------------------------------------------

/// One scraped process.
struct Endpoint {
    job: &'static str,
    label: String,
    addr: SocketAddr,
}

/// Client load through one proxy until `stop`: writes, reads (hits and misses), multi-key
/// commands, counters, keys with a short TTL, and commands that fail (wrong type, wrong arity),
/// so that every rate and every error panel has data. Returns how many commands it sent.
fn drive_load(addr: SocketAddr, tag: usize, stop: Arc<AtomicBool>) -> u64 {
    let mut client =
        RespClient::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    let mut sent = 0u64;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("load:{tag}:{}", i % 200);
        let commands: [Vec<String>; 10] = [
            vec!["SET".into(), key.clone(), format!("value-{i}")],
            vec!["GET".into(), key.clone()],
            vec!["GET".into(), format!("missing:{tag}:{i}")],
            vec![
                "MSET".into(),
                format!("{{m{tag}:{i}}}:a"),
                "1".into(),
                format!("{{m{tag}:{i}}}:b"),
                "2".into(),
            ],
            vec![
                "DEL".into(),
                format!("{{m{tag}:{i}}}:a"),
                format!("{{m{tag}:{i}}}:b"),
            ],
            vec!["INCR".into(), format!("counter:{tag}:{}", i % 10)],
            vec![
                "SET".into(),
                format!("ttl:{tag}:{i}"),
                "x".into(),
                "PX".into(),
                "100".into(),
            ],
            // ERR value is not an integer (the key holds "value-…").
            vec!["INCR".into(), key.clone()],
            // ERR wrong number of arguments.
            vec!["GET".into()],
            vec![
                "EXISTS".into(),
                key,
                format!("load:{tag}:{}", (i + 1) % 200),
            ],
        ];
        for command in &commands {
            let args: Vec<&str> = command.iter().map(String::as_str).collect();
            match client.command(&args) {
                Ok(_) => sent += 1,
                // A connection broken by a test step: reconnect and go on.
                Err(_) => match RespClient::connect(addr) {
                    Ok(new) => client = new,
                    Err(_) => thread::sleep(Duration::from_millis(50)),
                },
            }
        }
        i += 1;
        // Pace the load: two cores run eight processes and this test; a few hundred commands
        // per second are plenty for every rate to be non-zero.
        thread::sleep(Duration::from_millis(5));
    }
    sent
}

/// True when some endpoint of `job` exports `name` with a value above zero.
fn exported_nonzero(endpoints: &[Endpoint], job: &str, name: &str) -> bool {
    endpoints.iter().filter(|e| e.job == job).any(|e| {
        scrape(e.addr)
            .ok()
            .and_then(|text| parse_exposition(&text).ok())
            .is_some_and(|samples| {
                samples
                    .iter()
                    .any(|s| s.name == name && s.value.parse::<f64>().is_ok_and(|v| v > 0.0))
            })
    })
}

/// Checks the scraped samples of every endpoint against [`CONTRACT`]; returns the problems
/// and the set of names seen.
fn check_contract(scraped: &[(&Endpoint, Vec<Sample>)]) -> (Vec<String>, BTreeSet<String>) {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (endpoint, samples) in scraped {
        for sample in samples {
            seen.insert(sample.name.clone());
            if endpoint.job == "etcd" || !sample.name.starts_with("ringkv_") {
                continue;
            }
            let Some(metric) = contract_metric(&sample.name) else {
                // Extra metrics are allowed; the report lists them.
                continue;
            };
            let mut names: BTreeSet<&str> = sample.labels.keys().map(String::as_str).collect();
            if sample.name.ends_with("_bucket") && metric.kind == Histogram && !names.remove("le") {
                problems.push(format!(
                    "{}: {} has no le label",
                    endpoint.label, sample.name
                ));
            }
            let wanted: BTreeSet<&str> = metric.labels.iter().copied().collect();
            if names != wanted {
                problems.push(format!(
                    "{}: {} has labels {names:?}, the contract says {wanted:?}",
                    endpoint.label, sample.name
                ));
            }
            for (name, label, allowed) in LABEL_VALUES {
                if *name == metric.name {
                    if let Some(value) = sample.labels.get(*label) {
                        if !allowed.contains(&value.as_str()) {
                            problems.push(format!(
                                "{}: {}{{{label}=\"{value}\"}}: the contract allows {allowed:?}",
                                endpoint.label, sample.name
                            ));
                        }
                    }
                }
            }
        }
    }
    for metric in CONTRACT {
        let series = match metric.kind {
            Histogram => format!("{}_bucket", metric.name),
            _ => metric.name.to_string(),
        };
        for (endpoint, samples) in scraped {
            let exported_here = matches!(
                (metric.exporter, endpoint.job),
                (Both, "ringkv-proxy" | "ringkv-storage")
                    | (Proxy, "ringkv-proxy")
                    | (Storage, "ringkv-storage")
            );
            if !exported_here || metric.presence == OnEvent {
                continue;
            }
            if !samples.iter().any(|s| s.name == series) {
                problems.push(format!(
                    "{} does not export {series} (the contract says it does)",
                    endpoint.label
                ));
            }
        }
    }
    // A histogram must be one: cumulative buckets ending at +Inf, with _sum and _count.
    for metric in CONTRACT.iter().filter(|m| m.kind == Histogram) {
        for suffix in ["_bucket", "_sum", "_count"] {
            let name = format!("{}{suffix}", metric.name);
            let has_bucket = seen.contains(&format!("{}_bucket", metric.name));
            if has_bucket && !seen.contains(&name) {
                problems.push(format!("{} is exported without {name}", metric.name));
            }
        }
        let inf = scraped.iter().flat_map(|(_, s)| s).any(|s| {
            s.name == format!("{}_bucket", metric.name)
                && s.labels.get("le").map(String::as_str) == Some("+Inf")
        });
        if seen.contains(&format!("{}_bucket", metric.name)) && !inf {
            problems.push(format!("{}_bucket has no le=\"+Inf\" bucket", metric.name));
        }
    }
    (problems, seen)
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let dashboards = load_dashboards();
    let queries = dashboard_queries(&dashboards);
    assert!(!queries.is_empty(), "no dashboard queries found");

    // Every process with `--metrics-addr 127.0.0.1:0`: the kernel picks the port, the test
    // finds it in /proc (no race for a "free" port between picking and binding).
    let metrics_flag = ["--metrics-addr", "127.0.0.1:0"];
    let mut cluster = Cluster::builder()
        .nodes(3)
        .proxies(2)
        .shards(32)
        .storage_args(&metrics_flag)
        .proxy_args(&metrics_flag)
        .start();
    const DISCOVER: Duration = Duration::from_secs(30);
    let mut endpoints = Vec::new();
    for i in 0..cluster.proxy_count() {
        let pid = cluster.proxy_pid(i).expect("proxy runs");
        let label = format!("proxy {i}");
        let addr = discover_metrics_addr(pid, cluster.proxy_addr(i).port(), &label, DISCOVER);
        endpoints.push(Endpoint {
            job: "ringkv-proxy",
            label,
            addr,
        });
    }
    for i in 0..cluster.node_count() {
        let pid = cluster.node_pid(i).expect("storage node runs");
        let label = format!("storage node {}", cluster.node_id(i));
        let addr = discover_metrics_addr(pid, cluster.node_addr(i).port(), &label, DISCOVER);
        endpoints.push(Endpoint {
            job: "ringkv-storage",
            label,
            addr,
        });
    }
    endpoints.push(Endpoint {
        job: "etcd",
        label: "etcd".into(),
        addr: cluster.etcd().addr(),
    });

    let mut config = String::from(
        "# Generated by integration/tests/monitoring.rs: grafana/prometheus.yml's jobs, at the\n\
         # test cluster's ports, scraped every second.\n\
         global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n",
    );
    for job in JOBS {
        let targets: Vec<String> = endpoints
            .iter()
            .filter(|e| e.job == *job)
            .map(|e| format!("\"{}\"", e.addr))
            .collect();
        let _ = write!(
            config,
            "  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
    }
    let prometheus = Prometheus::start(&config);

    let stop = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = (0..cluster.proxy_count())
        .map(|i| {
            let (addr, stop) = (cluster.proxy_addr(i), Arc::clone(&stop));
            thread::spawn(move || drive_load(addr, i, stop))
        })
        .collect();

    poll_until(Duration::from_secs(60), "every scrape target up", || {
        let targets = prometheus.targets().ok()?;
        (targets.len() == endpoints.len() && targets.iter().all(|t| t.health == "up")).then_some(())
    });

    // Events the cluster panels show: a live map change (a fourth node, then assign: map and
    // nodes watch events, a new epoch everywhere, maybe MOVED/STALE retries), then that node
    // killed while it serves shards (node_down failures: requests for its shards get
    // CLUSTERDOWN at once). It is not scraped: a dead target is not what this test is about.
    let n4 = cluster.add_node();
    let epoch = cluster.assign();
    for i in 0..cluster.node_count() {
        cluster.wait_node_epoch(i, epoch);
    }
    // The proxies route by the new map once a key of n4 answers OK through them.
    for p in 0..cluster.proxy_count() {
        let addr = cluster.proxy_addr(p);
        poll_until(
            Duration::from_secs(30),
            "proxies to route by the new map",
            || {
                let mut client = RespClient::connect(addr).ok()?;
                let all_ok = (0..64).all(|k| {
                    matches!(
                        client.command(&["SET", &format!("after-assign:{k}"), "v"]),
                        Ok(Reply::Simple(_))
                    )
                });
                all_ok.then_some(())
            },
        );
    }
    cluster.kill_node(n4);
    for p in 0..cluster.proxy_count() {
        let addr = cluster.proxy_addr(p);
        poll_until(
            Duration::from_secs(30),
            "a CLUSTERDOWN for a shard of the killed node",
            || {
                let mut client = RespClient::connect(addr).ok()?;
                (0..64).find_map(
                    |k| match client.command(&["GET", &format!("after-assign:{k}")]) {
                        Ok(Reply::Error(e)) if e.starts_with(b"CLUSTERDOWN") => Some(()),
                        _ => None,
                    },
                )
            },
        );
    }
    // The counters these events drive, before Prometheus is asked: failures on a proxy, and
    // an expired key (the load sets keys with a 100 ms TTL; the sweep runs every 100 ms) on a
    // storage node. Not seeing one is reported by the contract check below.
    for (job, name) in [
        ("ringkv-proxy", "ringkv_backend_failures_total"),
        ("ringkv-storage", "ringkv_expired_keys_total"),
    ] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && !exported_nonzero(&endpoints, job, name) {
            thread::sleep(Duration::from_millis(100));
        }
    }

    // Each target scraped a few times since it came up.
    poll_until(
        Duration::from_secs(60),
        "three scrapes of every target",
        || {
            let result = prometheus.query("min(count_over_time(up[5m])) >= 3").ok()?;
            (!result.is_empty()).then_some(())
        },
    );

    // What the processes export, against the contract.
    let scraped: Vec<(&Endpoint, Vec<Sample>)> = endpoints
        .iter()
        .map(|e| {
            let text = scrape(e.addr).unwrap_or_else(|err| panic!("{}: {err}", e.label));
            let samples =
                parse_exposition(&text).unwrap_or_else(|err| panic!("{}: {err}", e.label));
            (e, samples)
        })
        .collect();
    let (mut problems, seen) = check_contract(&scraped);
    let mut dashboard_names = BTreeSet::new();
    for query in &queries {
        for name in promql_metric_names(&query.expr) {
            dashboard_names.insert(name.clone());
            let on_event = contract_metric(&name).is_some_and(|m| m.presence == OnEvent);
            if name != "up" && !on_event && !seen.contains(&name) {
                problems.push(format!(
                    "{}: metric {name} is not exported by any process: {}",
                    query.place, query.raw
                ));
            }
        }
    }
    let unseen_events: Vec<&str> = CONTRACT
        .iter()
        .filter(|m| m.presence == OnEvent && !seen.contains(m.name))
        .map(|m| m.name)
        .collect();
    if !unseen_events.is_empty() {
        eprintln!("not exported in this run (their events did not happen): {unseen_events:?}");
    }

    // Every query, polled until all return data or the deadline passes. A query Prometheus
    // rejects (bad syntax, a type error) will not get better: no waiting for those.
    const NO_SERIES: &str = "no series";
    let deadline = Instant::now() + QUERY_DEADLINE;
    let mut outcomes: Vec<Result<usize, String>>;
    loop {
        outcomes = queries
            .iter()
            .map(|q| match prometheus.query(&q.expr) {
                Ok(result) if result.is_empty() => Err(NO_SERIES.to_string()),
                Ok(result) => Ok(result.series.len()),
                Err(e) => Err(e),
            })
            .collect();
        let waiting = outcomes
            .iter()
            .any(|o| matches!(o, Err(e) if e == NO_SERIES));
        if !waiting || Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::Relaxed);
    let sent: u64 = loaders
        .into_iter()
        .map(|h| h.join().expect("load thread"))
        .sum();

    let mut report = String::new();
    for (query, outcome) in queries.iter().zip(&outcomes) {
        let status = match outcome {
            Ok(series) => format!("ok ({series} series)"),
            Err(e) => format!("FAILED: {e}"),
        };
        let _ = writeln!(
            report,
            "{status:<18} {}\n                   {}",
            query.place, query.expr
        );
    }
    eprintln!(
        "{} dashboard queries against Prometheus on {} ({sent} commands of load):\n{report}",
        queries.len(),
        prometheus.addr()
    );
    for (query, outcome) in queries.iter().zip(&outcomes) {
        if let Err(e) = outcome {
            problems.push(format!("{}: {e}\n      {}", query.place, query.expr));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s) with the dashboards against the exported metrics:\n  {}\n{}",
        problems.len(),
        problems.join("\n  "),
        prometheus.log_tail()
    );
}
