//! A real Prometheus for tests, and the plain HTTP needed to talk to it and to the processes'
//! `/metrics` endpoints.
//!
//! - [`Prometheus`]: one `prometheus` process (Debian's package) on a free loopback port with a
//!   temporary config and TSDB, ready once `/-/ready` answers, stopped by pid when dropped.
//!   [`Prometheus::query`] evaluates an instant query through `/api/v1/query`.
//! - [`http_get`]: one HTTP/1.0 GET over a std `TcpStream`. HTTP/1.0 because then servers
//!   answer with a plain body closed by end of stream (no chunked encoding to undo), which is
//!   all a test needs; no HTTP client crate enters the dependency tree.
//! - [`parse_exposition`]: the samples of a Prometheus text exposition (what `/metrics`
//!   serves), to check names and labels against the metrics contract.
//! - [`listening_ports`]: the TCP ports a process listens on, from `/proc`. A process started
//!   with `--metrics-addr 127.0.0.1:0` lets the kernel choose its metrics port (no race for a
//!   "free" port); this finds which one it got.
//! - [`promql_metric_names`]: the metric names a PromQL expression selects, so a test can say
//!   which dashboard query names a metric the code does not export.
//!
//! The binary is `$PROMETHEUS_BIN` if set, else `prometheus` in `$PATH`, else
//! `/usr/bin/prometheus`. A missing Prometheus fails the test with an install hint; it never
//! skips it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::free_port;

/// How long Prometheus may take from spawn to answering `/-/ready` (it replays nothing: the
/// TSDB is new, but two busy cores are slow).
pub const PROMETHEUS_STARTUP_DEADLINE: Duration = Duration::from_secs(60);

/// How long Prometheus may take to exit after SIGTERM before it gets SIGKILL.
pub const PROMETHEUS_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(20);

/// Any single HTTP exchange with a local process finishes within this, or it is hung.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Serialises "pick a port, spawn, wait until ready" within one test binary.
static START_LOCK: Mutex<()> = Mutex::new(());

/// The Prometheus server binary: `$PROMETHEUS_BIN`, `prometheus` in `$PATH`, or
/// `/usr/bin/prometheus`. Panics with an install hint when none exists.
pub fn prometheus_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("PROMETHEUS_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "PROMETHEUS_BIN={} does not name an existing file",
            path.display()
        );
        return path;
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|dir| dir.join("prometheus"))
        .chain([PathBuf::from("/usr/bin/prometheus")])
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "prometheus not found in PATH or /usr/bin: `scripts/install-deps.sh test` \
                 installs it (Debian package prometheus), or set PROMETHEUS_BIN to its path"
            )
        })
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// A response: status code and body (lossy UTF-8).
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// `GET <target>` (path and query, already encoded) on `addr` with HTTP/1.0; returns the status
/// and body. Errors are strings for failure messages and poll loops.
pub fn http_get(addr: SocketAddr, target: &str) -> Result<HttpResponse, String> {
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(HTTP_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(HTTP_TIMEOUT)))
        .map_err(|e| format!("setting timeouts on {addr}: {e}"))?;
    let request = format!("GET {target} HTTP/1.0\r\nHost: {addr}\r\nAccept: */*\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("sending GET {target} to {addr}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("reading the answer to GET {target} from {addr}: {e}"))?;
    parse_response(&raw).map_err(|e| format!("GET {target} from {addr}: {e}"))
}

/// Splits an HTTP/1.x response into status and body, undoing chunked encoding if a server
/// used it anyway.
fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {} bytes", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let chunked = lines.any(|line| {
        let lower = line.to_ascii_lowercase();
        lower.starts_with("transfer-encoding:") && lower.contains("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line without CRLF")?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

/// Percent-encodes `value` for a URL query component: everything but RFC 3986's unreserved
/// characters.
pub fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(byte))
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// The text a process serves on `http://addr/metrics`; an error unless it answers 200.
pub fn scrape(addr: SocketAddr) -> Result<String, String> {
    let response = http_get(addr, "/metrics")?;
    if response.status != 200 {
        return Err(format!(
            "GET /metrics on {addr} answered {}: {}",
            response.status,
            response.body.chars().take(200).collect::<String>()
        ));
    }
    Ok(response.body)
}

// ---------------------------------------------------------------------------------------------
// The text exposition format
// ---------------------------------------------------------------------------------------------

/// One sample line of a text exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The sample's name (`x_bucket`, `x_sum`, `x_count` for a histogram `x`).
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The value as written (`1`, `0.25`, `+Inf`, `NaN`).
    pub value: String,
}

/// Every sample of a text exposition (comments and blank lines skipped). Lines it cannot parse
/// are errors: a malformed exposition is a bug worth seeing.
pub fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        samples.push(parse_sample(line).ok_or_else(|| format!("bad sample line {line:?}"))?);
    }
    Ok(samples)
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = line[..name_end].to_string();
    if name.is_empty() {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let end = loop {
            // Skip separators, find a label name or the closing brace.
            while let Some(&(_, c)) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    chars.next();
                } else {
                    break;
                }
            }
            let (start, c) = chars.next()?;
            if c == '}' {
                break start + 1;
            }
            let mut key = String::from(c);
            loop {
                let (_, c) = chars.next()?;
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                let (_, c) = chars.next()?;
                match c {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    other => value.push(other),
                }
            }
            labels.insert(key.trim().to_string(), value);
        };
        rest = &inner[end..];
    }
    let value = rest.split_whitespace().next()?.to_string();
    Some(Sample {
        name,
        labels,
        value,
    })
}

// ---------------------------------------------------------------------------------------------
// Listening ports of a process
// ---------------------------------------------------------------------------------------------

/// The TCP ports process `pid` listens on (IPv4 and IPv6), from `/proc/<pid>/fd` and
/// `/proc/net/tcp{,6}`. Empty if the process is gone or `/proc` is not readable.
pub fn listening_ports(pid: u32) -> BTreeSet<u16> {
    let mut inodes = BTreeSet::new();
    if let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) {
        for entry in entries.flatten() {
            if let Ok(target) = fs::read_link(entry.path()) {
                let target = target.to_string_lossy();
                if let Some(inode) = target
                    .strip_prefix("socket:[")
                    .and_then(|rest| rest.strip_suffix(']'))
                {
                    inodes.insert(inode.to_string());
                }
            }
        }
    }
    let mut ports = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode …
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            // 0A is TCP_LISTEN.
            if *state != "0A" || !inodes.contains(*inode) {
                continue;
            }
            if let Some(port) = local
                .rsplit(':')
                .next()
                .and_then(|hex| u16::from_str_radix(hex, 16).ok())
            {
                ports.insert(port);
            }
        }
    }
    ports
}

/// The metrics address of a process started with `--metrics-addr 127.0.0.1:0`: polls until it
/// listens on exactly one port besides `service_port` and that port serves `/metrics`, then
/// returns it. Panics naming `what` after `timeout`.
pub fn discover_metrics_addr(
    pid: u32,
    service_port: u16,
    what: &str,
    timeout: Duration,
) -> SocketAddr {
    let deadline = Instant::now() + timeout;
    loop {
        let others: Vec<u16> = listening_ports(pid)
            .into_iter()
            .filter(|&port| port != service_port)
            .collect();
        let last = match others.as_slice() {
            [port] => {
                let addr = SocketAddr::from(([127, 0, 0, 1], *port));
                match scrape(addr) {
                    Ok(_) => return addr,
                    Err(e) => e,
                }
            }
            [] => format!("{what} (pid {pid}) listens only on its service port"),
            many => format!("{what} (pid {pid}) listens on several other ports: {many:?}"),
        };
        assert!(
            Instant::now() < deadline,
            "no metrics endpoint found for {what} within {timeout:?} (was it started with \
             --metrics-addr 127.0.0.1:0?); last: {last}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// PromQL
// ---------------------------------------------------------------------------------------------

/// PromQL's aggregation operators: written `sum by (l) (expr)` or `sum (expr) by (l)`.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Keywords that are neither metric names nor functions.
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
];

/// The metric names `expr` selects: every identifier that is not a function, an operator, a
/// keyword, a label name (inside `{…}` or a `by (…)` list) or part of a string, number or
/// duration. Selectors by `__name__` inside braces are not seen; the dashboards do not use
/// them.
pub fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // Set after a keyword that takes a label list: the next `(…)` is skipped.
    let mut skip_next_parens = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_string(&chars, i),
            '{' => i = skip_until(&chars, i, '}'),
            '[' => i = skip_until(&chars, i, ']'),
            '(' if skip_next_parens => {
                skip_next_parens = false;
                i = skip_until(&chars, i, ')');
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                // A number (0.99, 1e3, 0x1f) or a duration: one token.
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let called = chars.get(next) == Some(&'(');
                if LABEL_LIST_KEYWORDS.contains(&word.as_str()) {
                    // `group_left` may stand without a list.
                    skip_next_parens = called;
                } else if AGGREGATIONS.contains(&word.as_str())
                    || KEYWORDS.contains(&word.as_str())
                    || called
                {
                    // An operator or a function call.
                } else {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Index just past the string literal starting at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        if chars[i] == '\\' && quote != '`' {
            i += 2;
            continue;
        }
        if chars[i] == quote {
            return i + 1;
        }
        i += 1;
    }
    i
}

/// Index just past the first `close` after `start` outside string literals.
fn skip_until(chars: &[char], start: usize, close: char) -> usize {
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = skip_string(chars, i),
            c if c == close => return i + 1,
            _ => i += 1,
        }
    }
    i
}

// ---------------------------------------------------------------------------------------------
// The Prometheus process
// ---------------------------------------------------------------------------------------------

/// The outcome of an instant query that succeeded.
#[derive(Clone, Debug)]
pub struct QueryResult {
    /// `vector`, `matrix`, `scalar` or `string`.
    pub result_type: String,
    /// The series (vector and matrix: their elements; a scalar or string counts as one).
    pub series: Vec<serde_json::Value>,
}

impl QueryResult {
    /// True when the query returned nothing to draw.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

/// One scrape target as `/api/v1/targets` reports it.
#[derive(Clone, Debug)]
pub struct Target {
    pub job: String,
    pub instance: String,
    /// `up`, `down` or `unknown` (not scraped yet).
    pub health: String,
    pub last_error: String,
}

/// One running Prometheus; dropping it stops the process (SIGTERM, then SIGKILL) and deletes
/// its config and data.
pub struct Prometheus {
    child: Option<Child>,
    port: u16,
    /// Holds `prometheus.yml`, `data/` and `prometheus.log`.
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Writes `config` (a prometheus.yml) to a temporary directory, starts Prometheus with it
    /// on a free loopback port and waits until `/-/ready` answers 200.
    pub fn start(config: &str) -> Prometheus {
        let _guard = START_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = tempfile::Builder::new()
            .prefix("ringkv-prometheus-")
            .tempdir()
            .expect("creating a temporary prometheus dir");
        let config_path = dir.path().join("prometheus.yml");
        fs::write(&config_path, config)
            .unwrap_or_else(|e| panic!("writing {}: {e}", config_path.display()));
        let mut prometheus = Prometheus {
            child: None,
            port: 0,
            dir,
        };
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            let port = free_port();
            let log_path = prometheus.log_path();
            let log = File::options()
                .create(true)
                .append(true)
                .open(&log_path)
                .unwrap_or_else(|e| panic!("opening {}: {e}", log_path.display()));
            let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
            let log_err = log.try_clone().expect("cloning the prometheus.log handle");
            let mut cmd = Command::new(prometheus_bin());
            cmd.arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    prometheus.dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err);
            let described = format!("{cmd:?}");
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("spawning {described}: {e}"));
            prometheus.child = Some(child);
            prometheus.port = port;
            let deadline = Instant::now() + PROMETHEUS_STARTUP_DEADLINE;
            loop {
                let child = prometheus.child.as_mut().expect("just spawned");
                if let Ok(Some(status)) = child.try_wait() {
                    prometheus.child = None;
                    let log = fs::read(prometheus.log_path()).unwrap_or_default();
                    let new = String::from_utf8_lossy(&log[(log_start as usize).min(log.len())..])
                        .to_lowercase();
                    if new.contains("address already in use") && attempt < ATTEMPTS {
                        break;
                    }
                    panic!(
                        "{described} exited during startup with {status}\n{}",
                        prometheus.log_tail()
                    );
                }
                let last = match http_get(prometheus.addr(), "/-/ready") {
                    Ok(response) if response.status == 200 => return prometheus,
                    Ok(response) => format!("/-/ready answered {}", response.status),
                    Err(e) => e,
                };
                if Instant::now() >= deadline {
                    panic!(
                        "{described} not ready within {PROMETHEUS_STARTUP_DEADLINE:?} (last: \
                         {last})\n{}",
                        prometheus.log_tail()
                    );
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        unreachable!("the loop returns or panics");
    }

    /// `127.0.0.1:port` of its HTTP API.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `GET /api/v1/<path>?<params>`; returns `data` of a `"status": "success"` answer, or the
    /// error Prometheus gave.
    pub fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<serde_json::Value, String> {
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
            .collect();
        let target = if query.is_empty() {
            format!("/api/v1/{path}")
        } else {
            format!("/api/v1/{path}?{}", query.join("&"))
        };
        let response = http_get(self.addr(), &target)?;
        let json: serde_json::Value = serde_json::from_str(&response.body).map_err(|e| {
            format!(
                "{path}: HTTP {} with a body that is not JSON ({e}): {}",
                response.status,
                response.body.chars().take(300).collect::<String>()
            )
        })?;
        if json["status"] == "success" {
            Ok(json["data"].clone())
        } else {
            Err(format!(
                "{}: {}",
                json["errorType"].as_str().unwrap_or("error"),
                json["error"].as_str().unwrap_or("(no message)")
            ))
        }
    }

    /// Evaluates `expr` as an instant query at the current time.
    pub fn query(&self, expr: &str) -> Result<QueryResult, String> {
        let data = self.api("query", &[("query", expr)])?;
        let result_type = data["resultType"].as_str().unwrap_or_default().to_string();
        let series = match &data["result"] {
            serde_json::Value::Array(items)
                if result_type == "vector" || result_type == "matrix" =>
            {
                items.clone()
            }
            serde_json::Value::Null => Vec::new(),
            other => vec![other.clone()],
        };
        Ok(QueryResult {
            result_type,
            series,
        })
    }

    /// The active scrape targets.
    pub fn targets(&self) -> Result<Vec<Target>, String> {
        let data = self.api("targets", &[("state", "active")])?;
        let targets = data["activeTargets"]
            .as_array()
            .ok_or("no activeTargets in /api/v1/targets")?;
        Ok(targets
            .iter()
            .map(|t| Target {
                job: t["labels"]["job"].as_str().unwrap_or_default().to_string(),
                instance: t["labels"]["instance"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                health: t["health"].as_str().unwrap_or_default().to_string(),
                last_error: t["lastError"].as_str().unwrap_or_default().to_string(),
            })
            .collect())
    }

    /// The last lines Prometheus logged, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read(self.log_path()).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(30);
        format!(
            "--- last lines of prometheus.log ---\n{}",
            lines[start..].join("\n")
        )
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("prometheus.log")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        if let Ok(None) = child.try_wait() {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill(2) on the pid of our own child, not yet reaped (try_wait just
                // said it runs), so the pid cannot name another process.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            let deadline = Instant::now() + PROMETHEUS_SHUTDOWN_DEADLINE;
            while let Ok(None) = child.try_wait() {
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        promql_metric_names(expr).into_iter().collect()
    }

    #[test]
    fn metric_names_skip_functions_labels_and_durations() {
        assert_eq!(
            names(
                "histogram_quantile(0.99, sum by (command, le) \
                 (rate(ringkv_command_duration_seconds_bucket{job=\"x\"}[30s])))"
            ),
            ["ringkv_command_duration_seconds_bucket"]
        );
        assert_eq!(
            names(
                "(sum(rate(a_total{outcome=\"error\"}[1m])) or vector(0)) / sum(rate(a_total[1m]))"
            ),
            ["a_total"]
        );
        assert_eq!(
            names("b unless on (instance) c{role=\"storage\"} * on(x) group_left(role) d"),
            ["b", "c", "d"]
        );
        assert_eq!(names("topk(10, sum(x) by (shard))"), ["x"]);
        assert_eq!(names("count(e == 0) or vector(1e3)"), ["e"]);
        assert_eq!(names("max(m offset 5m) - min(m)"), ["m"]);
        assert_eq!(
            names("label_replace(up, \"a\", \"$1\", \"b\", \"(.*)\")"),
            ["up"]
        );
    }

    #[test]
    fn exposition_lines_parse() {
        let text = "# HELP x_total things\n# TYPE x_total counter\n\
                    x_total{command=\"get\",outcome=\"ok\"} 12\n\
                    y 0.5\n\
                    h_bucket{le=\"+Inf\", a=\"q\\\"uote\"} 3 1700000000\n";
        let samples = parse_exposition(text).unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].name, "x_total");
        assert_eq!(samples[0].labels["command"], "get");
        assert_eq!(samples[0].value, "12");
        assert_eq!(samples[1].name, "y");
        assert!(samples[1].labels.is_empty());
        assert_eq!(samples[2].labels["le"], "+Inf");
        assert_eq!(samples[2].labels["a"], "q\"uote");
        assert!(parse_exposition("x{a=\"1\" 3\n").is_err());
    }

    #[test]
    fn url_encoding_and_chunked_bodies() {
        assert_eq!(
            url_encode("sum(rate(x{a=~\".*\"}[30s]))"),
            "sum%28rate%28x%7Ba%3D~%22.%2A%22%7D%5B30s%5D%29%29"
        );
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n";
        let response = parse_response(raw).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, "Wikipedia");
        let plain = parse_response(b"HTTP/1.0 404 Not Found\r\nA: b\r\n\r\nnope").unwrap();
        assert_eq!((plain.status, plain.body.as_str()), (404, "nope"));
    }
}
