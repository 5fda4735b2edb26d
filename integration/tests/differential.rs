//! Differential test: one seeded random command stream goes to ringkv and to a real
//! redis-server; every reply must match.
//!
//! - The seed is printed; `DIFF_SEED=<n>` replays a run, `DIFF_COMMANDS=<n>` changes its length,
//!   `DIFF_HISTORY=<n>` shows more of the commands before a mismatch, and `DIFF_SKIP=a,b` leaves
//!   commands a and b out of the stream (a debugging aid to look past a known mismatch; the
//!   run then fails anyway at the end, so it can not hide a bug in CI).
//! - The reference redis-server runs with `--databases 1`, because ringkv has one database:
//!   `SELECT 1` must fail the same way on both.
//! - Replies are compared byte for byte, except where time makes them differ legitimately:
//!   TTL/PTTL/EXPIRETIME/PEXPIRETIME within a tolerance, KEYS sorted, SCAN as the set of keys
//!   a full iteration returns, RANDOMKEY as "both nil or both an existing key", and HELLO
//!   without its server/version/id/modules fields.
//! - Expiry times are either long (≥ 100 s) or already in the past, never short enough to race.
//!   Relative TTLs are `bucket * 10^7 s + step_index * 600 s`: two TTLs chosen at different
//!   steps differ by at least 600 s, far more than the run lasts, so EXPIRE ... GT/LT compares
//!   the same way on both servers even though they receive each command a moment apart.
//! - COMMAND, INFO, TIME, CLIENT ID/INFO/SETINFO and CONFIG GET are not diffed: they differ by
//!   design (and CLIENT SETINFO does not exist in redis 7.0).
//! - The same streams also run through a proxy of a 3-node cluster ([`Target::Cluster`]):
//!   clients of a cluster must not be able to tell it from one server. The one difference is
//!   by design: MSETNX, RENAME, RENAMENX, COPY, LCS and BITOP whose keys are in different
//!   shards are refused with CROSSSLOT (the README says so), so in the cluster streams those commands
//!   draw their keys from [`TAGGED_KEYS`], which share a hash tag and so a shard. OBJECT
//!   ENCODING and REFCOUNT run right after a SET of their key (ringkv answers them for the
//!   value as SET stores it, see the README), and OBJECT IDLETIME not at all. Everything else,
//!   including MSET, MGET, DEL, EXISTS, TOUCH, UNLINK, SCAN, KEYS, DBSIZE, RANDOMKEY and
//!   FLUSHALL across shards, must match exactly as in the standalone streams.
//! - Transactions (MULTI … EXEC or DISCARD, sometimes after WATCH) queue commands of the other
//!   generators whose replies compare exactly, except OBJECT (Redis's REFCOUNT counts the
//!   queued SET's own reference). After WATCH, the stream writes a watched key only with a
//!   value no key held before: WATCH compares what a key holds (the README says so). Through
//!   a cluster a transaction's keys are all tagged, and FLUSHALL, FLUSHDB and inline commands
//!   (untagged keys) stay out of it: a cluster runs a transaction at the one node of its keys.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use ringkv_integration::cluster::Cluster;
use ringkv_integration::{encode_command, escape, Frame, Protocol, Reply, RespClient, Server};

const DEFAULT_COMMANDS: usize = 3000;

/// The unit a TTL-family reply counts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimeUnit {
    Seconds,
    Millis,
}

impl TimeUnit {
    /// Relative TTL tolerance: TTL rounds to whole seconds, and the two servers see each
    /// command a little apart; on top of it, twice the longest such gap the run measured
    /// (`Run::slowest`).
    fn tolerance(self, slowest: Duration) -> i64 {
        let skew_ms = i64::try_from(2 * slowest.as_millis()).unwrap_or(i64::MAX / 2);
        match self {
            TimeUnit::Seconds => 2 + (skew_ms + 999) / 1000,
            TimeUnit::Millis => 2000 + skew_ms + 1,
        }
    }
}

/// The run must finish well within the 600 s step spacing of relative TTLs (see module doc).
const MAX_RUN_TIME: Duration = Duration::from_secs(300);

/// Shards of the cluster the cluster streams run through: enough that the ~20 keys of the
/// stream spread over every node, few enough to start quickly.
const CLUSTER_SHARDS: u32 = 16;

#[test]
fn resp2_random_command_stream_matches_redis() {
    run_differential(Protocol::Resp2, Target::Standalone);
}

#[test]
fn resp3_random_command_stream_matches_redis() {
    run_differential(Protocol::Resp3, Target::Standalone);
}

#[test]
fn resp2_random_command_stream_through_a_cluster_proxy_matches_redis() {
    run_differential(Protocol::Resp2, Target::Cluster);
}

#[test]
fn resp3_random_command_stream_through_a_cluster_proxy_matches_redis() {
    run_differential(Protocol::Resp3, Target::Cluster);
}

/// What the stream is compared against redis-server on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// The standalone `ringkv` binary.
    Standalone,
    /// A proxy of a cluster of 3 storage nodes with [`CLUSTER_SHARDS`] shards.
    Cluster,
}

/// Keeps the processes under test alive for the run.
enum UnderTest {
    Standalone(Server),
    Cluster(Cluster),
}

impl UnderTest {
    fn start(target: Target) -> UnderTest {
        match target {
            Target::Standalone => UnderTest::Standalone(Server::ringkv(&[])),
            Target::Cluster => UnderTest::Cluster(
                Cluster::builder()
                    .nodes(3)
                    .proxies(1)
                    .shards(CLUSTER_SHARDS)
                    .start(),
            ),
        }
    }

    fn connect(&self) -> RespClient {
        match self {
            UnderTest::Standalone(server) => server.connect(),
            UnderTest::Cluster(cluster) => cluster.proxy(0),
        }
    }
}

fn seed() -> u64 {
    match std::env::var("DIFF_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("DIFF_SEED={s:?} is not a u64")),
        Err(_) => rand::random(),
    }
}

fn command_count() -> usize {
    match std::env::var("DIFF_COMMANDS") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("DIFF_COMMANDS={s:?} is not a count")),
        Err(_) => DEFAULT_COMMANDS,
    }
}

/// How many recent commands a mismatch report shows (`DIFF_HISTORY`, default 12).
fn history_len() -> usize {
    std::env::var("DIFF_HISTORY")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(12)
}

fn run_differential(protocol: Protocol, target: Target) {
    let seed = seed();
    let count = command_count();
    println!("differential {protocol:?} {target:?}: DIFF_SEED={seed} DIFF_COMMANDS={count}");
    let ringkv = UnderTest::start(target);
    let redis = Server::redis(&["--databases", "1"]);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    let mut gen = Gen::new(seed, protocol, now.as_secs() as i64, target);
    let mut run = Run {
        seed,
        protocol,
        target,
        ringkv: ringkv.connect(),
        redis: redis.connect(),
        history: VecDeque::new(),
        errors: BTreeMap::new(),
        executed: 0,
        slowest: Duration::ZERO,
    };
    let started = Instant::now();

    if protocol == Protocol::Resp3 {
        run.execute(&Step::new(
            vec![b"HELLO".to_vec(), b"3".to_vec()],
            Check::Hello,
        ));
    }
    let mut produced = 0;
    while produced < count {
        let item = gen.item();
        produced += item.len();
        match item {
            Item::Sequence(steps) => steps.iter().for_each(|step| run.execute(step)),
            Item::Pipeline(steps) => run.execute_pipeline(&steps),
        }
        assert!(
            started.elapsed() < MAX_RUN_TIME,
            "differential run took longer than {MAX_RUN_TIME:?}; relative TTLs are no longer \
             guaranteed to compare the same way on both servers (DIFF_SEED={seed})"
        );
    }
    run.compare_final_state();
    assert!(
        gen.skip.is_empty(),
        "DIFF_SKIP={} left commands out: the streams matched without them, but this run does not count",
        gen.skip.iter().map(|s| escape(s)).collect::<Vec<_>>().join(",")
    );

    println!(
        "differential {protocol:?} {target:?}: {} commands matched in {:?}; distinct error replies seen:",
        run.executed,
        started.elapsed()
    );
    for (error, n) in &run.errors {
        println!("  {n:5} × {error}");
    }
}

// ---------------------------------------------------------------------------------------------
// Steps
// ---------------------------------------------------------------------------------------------

/// How the request goes on the wire.
#[derive(Clone, Debug)]
enum Wire {
    /// A RESP multibulk of these arguments.
    Multibulk(Vec<Vec<u8>>),
    /// A line of inline-command text, sent as is (must end in `\n`).
    Inline(Vec<u8>),
}

/// How the two replies are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// Byte for byte.
    Exact,
    /// Integers equal, or both non-negative times in this unit within the run's tolerance.
    Ttl(TimeUnit),
    /// An array compared after sorting its elements.
    Sorted,
    /// HELLO's map without the fields that name the implementation.
    Hello,
    /// Both nil, or both a key that exists on its own server.
    RandomKey,
    /// A full SCAN iteration with the step's options; compares the set of keys.
    ScanAll,
    /// DBSIZE, compared exactly after a full SCAN on both servers. redis-server counts keys
    /// whose expiry has passed until something reclaims them (SET ... EXAT <past> leaves
    /// one behind until active expiry samples it), so a bare DBSIZE would race; SCAN
    /// reclaims every expired key it meets.
    Dbsize,
}

#[derive(Clone, Debug)]
struct Step {
    wire: Wire,
    check: Check,
}

impl Step {
    fn new(args: Vec<Vec<u8>>, check: Check) -> Step {
        Step {
            wire: Wire::Multibulk(args),
            check,
        }
    }

    fn exact(args: Vec<Vec<u8>>) -> Step {
        Step::new(args, Check::Exact)
    }

    fn bytes(&self) -> Vec<u8> {
        match &self.wire {
            Wire::Multibulk(args) => encode_command(args),
            Wire::Inline(line) => line.clone(),
        }
    }

    fn args(&self) -> Option<&[Vec<u8>]> {
        match &self.wire {
            Wire::Multibulk(args) => Some(args),
            Wire::Inline(_) => None,
        }
    }

    fn name_is(&self, name: &str) -> bool {
        match &self.wire {
            Wire::Multibulk(args) => args
                .first()
                .is_some_and(|a| a.eq_ignore_ascii_case(name.as_bytes())),
            Wire::Inline(_) => false,
        }
    }

    fn describe(&self) -> String {
        match &self.wire {
            Wire::Multibulk(args) => args
                .iter()
                .map(|a| format!("\"{}\"", escape(a)))
                .collect::<Vec<_>>()
                .join(" "),
            Wire::Inline(line) => format!("inline \"{}\"", escape(line)),
        }
    }
}

enum Item {
    /// Steps sent one at a time, each reply read before the next step is sent.
    Sequence(Vec<Step>),
    /// Written to each server in one write; replies read afterwards, in order.
    Pipeline(Vec<Step>),
}

impl Item {
    fn len(&self) -> usize {
        match self {
            Item::Sequence(steps) | Item::Pipeline(steps) => steps.len(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Execution and comparison
// ---------------------------------------------------------------------------------------------

struct Run {
    seed: u64,
    protocol: Protocol,
    target: Target,
    ringkv: RespClient,
    redis: RespClient,
    /// The last few commands and replies, printed on a mismatch.
    history: VecDeque<String>,
    /// Distinct error replies from redis-server, for the summary.
    errors: BTreeMap<String, usize>,
    executed: usize,
    /// The longest a step took from being sent to ringkv to redis-server's reply: both servers
    /// ran it within that window, so a time one of them set and a time it read later differ
    /// between the servers by at most twice it (a stalled machine widens it, not the check).
    slowest: Duration,
}

impl Run {
    fn execute(&mut self, step: &Step) {
        let bytes = step.bytes();
        if step.check == Check::Dbsize || scans_for_type_none(step) {
            reclaim_expired(&mut self.ringkv, "ringkv");
            reclaim_expired(&mut self.redis, "redis-server");
        }
        // A successful `HELLO n` already answers in protocol n; an error keeps the old one.
        let before = (self.ringkv.protocol(), self.redis.protocol());
        if let Some(protocol) = hello_protocol(step) {
            self.ringkv.set_protocol(protocol);
            self.redis.set_protocol(protocol);
        }
        let sent = Instant::now();
        let a = exchange(&mut self.ringkv, &bytes, 1, "ringkv").remove(0);
        let b = exchange(&mut self.redis, &bytes, 1, "redis-server").remove(0);
        self.slowest = self.slowest.max(sent.elapsed());
        if a.reply.is_error() {
            self.ringkv.set_protocol(before.0);
        }
        if b.reply.is_error() {
            self.redis.set_protocol(before.1);
        }
        self.compare(step, &a, &b);
    }

    fn execute_pipeline(&mut self, steps: &[Step]) {
        let bytes: Vec<u8> = steps.iter().flat_map(Step::bytes).collect();
        let sent = Instant::now();
        let a = exchange(&mut self.ringkv, &bytes, steps.len(), "ringkv");
        let b = exchange(&mut self.redis, &bytes, steps.len(), "redis-server");
        self.slowest = self.slowest.max(sent.elapsed());
        for ((step, a), b) in steps.iter().zip(&a).zip(&b) {
            self.compare(step, a, b);
        }
    }

    fn compare(&mut self, step: &Step, a: &Frame, b: &Frame) {
        self.executed += 1;
        let index = self.executed;
        if let Reply::Error(e) = &b.reply {
            // Unknown-command errors quote their arguments; group them by their start.
            let text = escape(e);
            let key = match text.find(", with args beginning with:") {
                Some(at) => format!("{}, with args beginning with: ...", &text[..at]),
                None => text,
            };
            *self.errors.entry(key).or_default() += 1;
        }
        let verdict = match step.check {
            Check::Exact => exact(a, b),
            Check::Ttl(unit) => ttl_within(a, b, unit.tolerance(self.slowest)),
            Check::Sorted => sorted(a, b),
            Check::Hello => hello(a, b),
            Check::RandomKey => self.random_key(a, b),
            Check::ScanAll => self.scan_all(step, a, b),
            Check::Dbsize => exact(a, b),
        };
        self.history.push_back(format!(
            "#{index} {}\n      ringkv: {}\n      redis:  {}",
            step.describe(),
            a.reply,
            b.reply
        ));
        if self.history.len() > history_len() {
            self.history.pop_front();
        }
        if let Err(why) = verdict {
            let history: Vec<String> = self.history.iter().cloned().collect();
            panic!(
                "ringkv ({target:?}) and redis-server disagree ({protocol:?}), replay with DIFF_SEED={seed}\n\
                 command #{index}: {command}\n  ringkv: {ra}\n          raw \"{rraw}\"\n  redis:  {rb}\n          raw \"{braw}\"\n  \
                 why: {why}\nrecent commands (oldest first):\n  {history}",
                protocol = self.protocol,
                target = self.target,
                seed = self.seed,
                command = step.describe(),
                ra = a.reply,
                rraw = escape(&a.raw),
                rb = b.reply,
                braw = escape(&b.raw),
                history = history.join("\n  "),
            );
        }
        self.track_protocol(step, a);
    }

    /// `RESET` takes a connection back to RESP2 after its reply.
    fn track_protocol(&mut self, step: &Step, reply: &Frame) {
        if step.name_is("RESET") && !reply.reply.is_error() {
            self.ringkv.set_protocol(Protocol::Resp2);
            self.redis.set_protocol(Protocol::Resp2);
        }
    }

    fn random_key(&mut self, a: &Frame, b: &Frame) -> Result<(), String> {
        match (&a.reply, &b.reply) {
            (Reply::Null, Reply::Null) => Ok(()),
            (Reply::Bulk(ka), Reply::Bulk(kb)) => {
                for (client, key, who) in [
                    (&mut self.ringkv, ka, "ringkv"),
                    (&mut self.redis, kb, "redis-server"),
                ] {
                    let exists = client
                        .command(&[b"EXISTS".as_slice(), key])
                        .unwrap_or_else(|e| panic!("{who}: EXISTS after RANDOMKEY: {e}"));
                    if exists != Reply::Integer(1) {
                        return Err(format!(
                            "{who}'s RANDOMKEY returned \"{}\", which does not exist there (EXISTS: {exists})",
                            escape(key)
                        ));
                    }
                }
                Ok(())
            }
            _ => exact(a, b).map_err(|_| {
                "RANDOMKEY: one nil, the other not (or an unexpected reply type)".into()
            }),
        }
    }

    /// The first SCAN reply is compared exactly if either is an error; otherwise each server is
    /// iterated to completion with the same options and the key sets are compared.
    fn scan_all(&mut self, step: &Step, a: &Frame, b: &Frame) -> Result<(), String> {
        if a.reply.is_error() || b.reply.is_error() {
            return exact(a, b);
        }
        let args = step.args().expect("SCAN steps are multibulk");
        let keys_a = iterate_scan(&mut self.ringkv, args, &a.reply, "ringkv")?;
        let keys_b = iterate_scan(&mut self.redis, args, &b.reply, "redis-server")?;
        if keys_a == keys_b {
            Ok(())
        } else {
            Err(format!(
                "full SCAN iteration returned different keys:\n    ringkv only: {}\n    redis only:  {}",
                show_keys(keys_a.difference(&keys_b)),
                show_keys(keys_b.difference(&keys_a))
            ))
        }
    }

    /// After the stream: every key, value and TTL must be the same on both servers.
    fn compare_final_state(&mut self) {
        let step = Step::new(vec![b"KEYS".to_vec(), b"*".to_vec()], Check::Sorted);
        self.execute(&step);
        let keys = match self
            .redis
            .command(&["KEYS", "*"])
            .expect("KEYS * on redis-server")
        {
            Reply::Array(keys) | Reply::Set(keys) => keys,
            other => panic!("KEYS * on redis-server answered {other}"),
        };
        for key in keys {
            let key = key.as_bytes().expect("KEYS returns bulk strings").to_vec();
            self.execute(&Step::exact(vec![b"GET".to_vec(), key.clone()]));
            self.execute(&Step::new(
                vec![b"PTTL".to_vec(), key],
                Check::Ttl(TimeUnit::Millis),
            ));
        }
        self.execute(&Step::new(vec![b"DBSIZE".to_vec()], Check::Dbsize));
    }
}

/// The protocol a `HELLO 2` / `HELLO 3` step asks for (other HELLOs do not switch).
fn hello_protocol(step: &Step) -> Option<Protocol> {
    if !step.name_is("HELLO") {
        return None;
    }
    match step.args().and_then(|a| a.get(1)).map(Vec::as_slice) {
        Some(b"2") => Some(Protocol::Resp2),
        Some(b"3") => Some(Protocol::Resp3),
        _ => None,
    }
}

fn exchange(client: &mut RespClient, bytes: &[u8], replies: usize, who: &str) -> Vec<Frame> {
    client.send_raw(bytes).unwrap_or_else(|e| {
        panic!(
            "{who}: writing \"{}\": {e}",
            escape(&bytes[..bytes.len().min(200)])
        )
    });
    (0..replies)
        .map(|i| {
            client.read_frame().unwrap_or_else(|e| {
                panic!(
                    "{who}: reading reply {} of {replies} to \"{}\": {e}",
                    i + 1,
                    escape(&bytes[..bytes.len().min(300)])
                )
            })
        })
        .collect()
}

fn exact(a: &Frame, b: &Frame) -> Result<(), String> {
    if a.raw == b.raw {
        Ok(())
    } else {
        Err("replies differ".into())
    }
}

fn ttl_within(a: &Frame, b: &Frame, tolerance: i64) -> Result<(), String> {
    match (&a.reply, &b.reply) {
        (Reply::Integer(x), Reply::Integer(y)) if *x >= 0 && *y >= 0 => {
            if (x - y).abs() <= tolerance {
                Ok(())
            } else {
                Err(format!(
                    "times differ by {} (tolerance {tolerance})",
                    (x - y).abs()
                ))
            }
        }
        _ => exact(a, b),
    }
}

fn sorted(a: &Frame, b: &Frame) -> Result<(), String> {
    match (a.reply.as_array(), b.reply.as_array()) {
        (Some(x), Some(y)) => {
            let mut x: Vec<String> = x.iter().map(Reply::to_string).collect();
            let mut y: Vec<String> = y.iter().map(Reply::to_string).collect();
            x.sort();
            y.sort();
            if x == y {
                Ok(())
            } else {
                Err("different elements (compared sorted)".into())
            }
        }
        _ => exact(a, b),
    }
}

/// Fields of a HELLO reply that name the implementation rather than describe the connection.
const HELLO_IMPLEMENTATION_FIELDS: [&[u8]; 4] = [b"server", b"version", b"id", b"modules"];

fn hello_fields(reply: &Reply) -> Option<Vec<(Vec<u8>, String)>> {
    let pairs: Vec<(Reply, Reply)> = match reply {
        Reply::Map(pairs) => pairs.clone(),
        Reply::Array(flat) if flat.len() % 2 == 0 => flat
            .chunks(2)
            .map(|kv| (kv[0].clone(), kv[1].clone()))
            .collect(),
        _ => return None,
    };
    let mut fields: Vec<(Vec<u8>, String)> = pairs
        .into_iter()
        .filter_map(|(k, v)| {
            let k = k.as_bytes()?.to_vec();
            (!HELLO_IMPLEMENTATION_FIELDS.contains(&k.as_slice())).then(|| (k, v.to_string()))
        })
        .collect();
    fields.sort();
    Some(fields)
}

fn hello(a: &Frame, b: &Frame) -> Result<(), String> {
    if a.reply.is_error() || b.reply.is_error() {
        return exact(a, b);
    }
    match (hello_fields(&a.reply), hello_fields(&b.reply)) {
        (Some(x), Some(y)) if x == y => {
            let kind = |r: &Reply| std::mem::discriminant(r);
            if kind(&a.reply) == kind(&b.reply) {
                Ok(())
            } else {
                Err("HELLO replies are of different RESP types".into())
            }
        }
        (Some(_), Some(_)) => {
            Err("HELLO fields other than server/version/id/modules differ".into())
        }
        _ => Err("HELLO reply is not a map of fields".into()),
    }
}

fn scan_page(reply: &Reply) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
    let parts = reply
        .as_array()
        .ok_or_else(|| format!("SCAN reply is not an array: {reply}"))?;
    match parts {
        [cursor, keys] => {
            let cursor = cursor
                .as_bytes()
                .ok_or_else(|| format!("SCAN cursor is not a string: {cursor}"))?
                .to_vec();
            let keys = keys
                .as_array()
                .ok_or_else(|| format!("SCAN keys are not an array: {keys}"))?
                .iter()
                .map(|k| {
                    k.as_bytes()
                        .map(<[u8]>::to_vec)
                        .ok_or_else(|| format!("SCAN key is not a string: {k}"))
                })
                .collect::<Result<_, _>>()?;
            Ok((cursor, keys))
        }
        _ => Err(format!("SCAN reply does not have two elements: {reply}")),
    }
}

fn iterate_scan(
    client: &mut RespClient,
    args: &[Vec<u8>],
    first: &Reply,
    who: &str,
) -> Result<BTreeSet<Vec<u8>>, String> {
    const MAX_PAGES: usize = 100_000;
    let (mut cursor, keys) = scan_page(first).map_err(|e| format!("{who}: {e}"))?;
    let mut all: BTreeSet<Vec<u8>> = keys.into_iter().collect();
    let mut pages = 1;
    while cursor != b"0" {
        pages += 1;
        if pages > MAX_PAGES {
            return Err(format!(
                "{who}: SCAN did not finish after {MAX_PAGES} pages"
            ));
        }
        let mut next = args.to_vec();
        next[1] = cursor;
        let reply = client
            .command(&next)
            .unwrap_or_else(|e| panic!("{who}: SCAN continuation: {e}"));
        let (c, keys) = scan_page(&reply).map_err(|e| format!("{who}: {e}"))?;
        cursor = c;
        all.extend(keys);
    }
    Ok(all)
}

/// redis-server 7.0 lists an expired, not yet reclaimed key under `SCAN ... TYPE none` (its
/// type lookup sees no key, and "none" matches). That depends on active-expiry timing, so such
/// a SCAN runs after [`reclaim_expired`], when it must find nothing on either server.
fn scans_for_type_none(step: &Step) -> bool {
    step.check == Check::ScanAll
        && step.args().is_some_and(|args| {
            args.windows(2)
                .any(|w| w[0].eq_ignore_ascii_case(b"TYPE") && w[1].eq_ignore_ascii_case(b"none"))
        })
}

/// Runs a full SCAN (replies not compared) so redis-server deletes the expired keys it still
/// holds; see [`Check::Dbsize`].
fn reclaim_expired(client: &mut RespClient, who: &str) {
    let args = [
        b"SCAN".to_vec(),
        b"0".to_vec(),
        b"COUNT".to_vec(),
        b"1000".to_vec(),
    ];
    let first = client
        .command(&args)
        .unwrap_or_else(|e| panic!("{who}: SCAN before DBSIZE: {e}"));
    iterate_scan(client, &args, &first, who).unwrap_or_else(|e| panic!("SCAN before DBSIZE: {e}"));
}

fn show_keys<'a>(keys: impl Iterator<Item = &'a Vec<u8>>) -> String {
    let shown: Vec<String> = keys.map(|k| format!("\"{}\"", escape(k))).collect();
    if shown.is_empty() {
        "(none)".into()
    } else {
        shown.join(" ")
    }
}

// ---------------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------------

/// About 20 keys, so commands keep hitting each other's keys. Includes hash tags, the empty
/// key, binary bytes, CR LF and a space.
const KEYS: &[&[u8]] = &[
    b"k1",
    b"k2",
    b"k3",
    b"k4",
    b"counter",
    b"float",
    b"{user}:1",
    b"{user}:2",
    b"{user}:3",
    b"{}",
    b"{a",
    b"a}b{c}d",
    b"",
    b"bin\x00key",
    b"crlf\r\nkey",
    b"\xff\xfe\x80high",
    b"space key",
    b"UPPER",
    b"k10",
    b"k*?[",
];

/// The keys of [`KEYS`] that share the hash tag `{user}`, so one shard: where the cluster
/// streams draw the keys of MSETNX, RENAME, RENAMENX, COPY, LCS and BITOP (see the module
/// doc).
const TAGGED_KEYS: &[&[u8]] = &[b"{user}:1", b"{user}:2", b"{user}:3"];

/// Values chosen to be interesting to integer and float parsers as well as plain strings.
const VALUES: &[&[u8]] = &[
    b"",
    b"v",
    b"hello world",
    b"0",
    b"1",
    b"-1",
    b"10",
    b"42",
    b"9223372036854775807",
    b"-9223372036854775808",
    b"9223372036854775808",
    b"9223372036854775806",
    b"3.14",
    b"-2.5",
    b"1e3",
    b"0.1",
    b" 1",
    b"1 ",
    b"+1",
    b"01",
    b"-0",
    b"0x1A",
    b"inf",
    b"nan",
    b"10.50",
    b"1.7976931348623157e308",
    b"\x00",
    b"a\x00b\r\nc\xff",
    b"\r\n",
    b"\xc3\xa9t\xc3\xa9",
];

const INTEGER_ARGS: &[&[u8]] = &[
    b"0",
    b"1",
    b"-1",
    b"5",
    b"100",
    b"-100",
    b"9223372036854775807",
    b"-9223372036854775808",
    b"9223372036854775808",
    b"99999999999999999999",
    b"abc",
    b"1.5",
    b"",
    b" 5",
    b"+5",
    b"007",
];

const FLOAT_ARGS: &[&[u8]] = &[
    b"0.1", b"0.2", b"1", b"-1.5", b"2.5", b"10", b"1e3", b"-1e3", b"3.0e-2", b"5.0e3", b"1e10",
    b"0", b"-0", b"1e-20", b"0x10", b"abc", b"inf", b"-inf", b"nan", b"", b" 1", b"1e308",
];

const GLOB_PATTERNS: &[&[u8]] = &[
    b"*",
    b"k*",
    b"k?",
    b"k[1-3]",
    b"k[^1]*",
    b"k[!1]",
    b"{user}*",
    b"\\{user\\}*",
    b"*:*",
    b"*e*",
    b"?",
    b"",
    b"[",
    b"k[",
    b"k\\*?\\[",
    b"*\\",
    b"bin*",
    b"*\r\n*",
    b"[a-z][0-9]",
    b"[z-a]*",
    b"*[Ee]R*",
    b"\xff*",
    b"{*}*",
    b"nomatch*",
];

const UNKNOWN_COMMANDS: &[&str] = &["FOO", "nosuchcommand", "GETT", "sett", "xyzzy", "Ping2"];

/// `(name, arity)` as in Redis's command table: positive = exact argument count including the
/// name, negative = at least that many. Commands of arity -1 (PING, FLUSHALL...) have no
/// wrong arity by the table and are left out.
const ARITIES: &[(&str, i32)] = &[
    ("get", 2),
    ("set", -3),
    ("setnx", 3),
    ("setex", 4),
    ("psetex", 4),
    ("getset", 3),
    ("getdel", 2),
    ("getex", -2),
    ("mget", -2),
    ("mset", -3),
    ("msetnx", -3),
    ("append", 3),
    ("strlen", 2),
    ("incr", 2),
    ("decr", 2),
    ("incrby", 3),
    ("decrby", 3),
    ("incrbyfloat", 3),
    ("getrange", 4),
    ("setrange", 4),
    ("del", -2),
    ("unlink", -2),
    ("exists", -2),
    ("touch", -2),
    ("type", 2),
    ("expire", -3),
    ("pexpire", -3),
    ("expireat", -3),
    ("pexpireat", -3),
    ("ttl", 2),
    ("pttl", 2),
    ("expiretime", 2),
    ("pexpiretime", 2),
    ("persist", 2),
    ("scan", -2),
    ("keys", 2),
    ("randomkey", 1),
    ("rename", 3),
    ("renamenx", 3),
    ("copy", -3),
    ("lcs", -3),
    ("substr", 4),
    ("setbit", 4),
    ("getbit", 3),
    ("bitcount", -2),
    ("bitpos", -3),
    ("bitop", -4),
    ("bitfield", -2),
    ("bitfield_ro", -2),
    ("dbsize", 1),
    ("echo", 2),
    ("multi", 1),
    ("exec", 1),
    ("discard", 1),
    ("watch", -2),
    ("unwatch", 1),
    ("select", 2),
    ("time", 1),
    ("dbsize", 1),
    ("echo", 2),
];

#[derive(Clone, Copy)]
enum Unit {
    Seconds,
    Millis,
}

struct Gen {
    rng: StdRng,
    protocol: Protocol,
    /// Unix time (seconds) when the run started: absolute timestamps are built from it.
    t0: i64,
    /// Counts generated steps; relative TTLs embed it (see module doc).
    index: i64,
    /// Lowercase command names left out (`DIFF_SKIP`).
    skip: Vec<Vec<u8>>,
    /// Whether the stream goes through a cluster proxy (single-shard keys for MSETNX,
    /// RENAME, RENAMENX, COPY, LCS and BITOP).
    target: Target,
    /// Whether the commands being generated are queued in a transaction (no transaction
    /// inside it).
    in_transaction: bool,
    /// Whether [`Gen::key`] draws only from [`TAGGED_KEYS`]: a transaction's keys through a
    /// cluster proxy, which runs it at the one node of their shard.
    tagged_only: bool,
}

impl Gen {
    fn new(seed: u64, protocol: Protocol, t0: i64, target: Target) -> Gen {
        Gen {
            rng: StdRng::seed_from_u64(seed),
            protocol,
            t0,
            index: 0,
            skip: std::env::var("DIFF_SKIP")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase().into_bytes())
                .filter(|s| !s.is_empty())
                .collect(),
            target,
            in_transaction: false,
            tagged_only: false,
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.gen_bool(p)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        *items.choose(&mut self.rng).expect("non-empty choice")
    }

    /// A command name in upper, lower or mixed case.
    fn name(&mut self, name: &str) -> Vec<u8> {
        match self.rng.gen_range(0..10) {
            0..=5 => name.to_ascii_uppercase().into_bytes(),
            6..=8 => name.to_ascii_lowercase().into_bytes(),
            _ => name
                .chars()
                .map(|c| {
                    if self.rng.gen_bool(0.5) {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                })
                .collect::<String>()
                .into_bytes(),
        }
    }

    /// An option keyword (also case-insensitive in Redis).
    fn opt(&mut self, word: &str) -> Vec<u8> {
        self.name(word)
    }

    fn key(&mut self) -> Vec<u8> {
        if self.tagged_only {
            return self.pick(TAGGED_KEYS).to_vec();
        }
        self.pick(KEYS).to_vec()
    }

    /// A key for a command the cluster refuses across shards: any key standalone, one of
    /// [`TAGGED_KEYS`] through a cluster.
    fn same_shard_key(&mut self) -> Vec<u8> {
        match self.target {
            Target::Standalone => self.key(),
            Target::Cluster => self.pick(TAGGED_KEYS).to_vec(),
        }
    }

    fn keys(&mut self, min: usize, max: usize) -> Vec<Vec<u8>> {
        let n = self.rng.gen_range(min..=max);
        (0..n).map(|_| self.key()).collect()
    }

    fn value(&mut self) -> Vec<u8> {
        if self.chance(0.25) {
            let len = self.rng.gen_range(0..48);
            (0..len).map(|_| self.rng.gen()).collect()
        } else {
            self.pick(VALUES).to_vec()
        }
    }

    fn int_arg(&mut self) -> Vec<u8> {
        if self.chance(0.3) {
            self.rng.gen_range(-1000i64..1000).to_string().into_bytes()
        } else {
            self.pick(INTEGER_ARGS).to_vec()
        }
    }

    /// A valid relative TTL, ≥ 10^7 s, distinct per step by at least 600 s.
    fn rel(&mut self, unit: Unit) -> Vec<u8> {
        let bucket = self.rng.gen_range(1..=20i64);
        let secs = bucket * 10_000_000 + self.index * 600;
        match unit {
            Unit::Seconds => secs.to_string(),
            Unit::Millis => (secs * 1000 + self.rng.gen_range(0..1000)).to_string(),
        }
        .into_bytes()
    }

    /// A valid absolute Unix time in the future (same spacing as [`Gen::rel`]).
    fn abs(&mut self, unit: Unit) -> Vec<u8> {
        let bucket = self.rng.gen_range(1..=20i64);
        let secs = self.t0 + bucket * 10_000_000 + self.index * 600;
        match unit {
            Unit::Seconds => secs.to_string(),
            Unit::Millis => (secs * 1000 + self.rng.gen_range(0..1000)).to_string(),
        }
        .into_bytes()
    }

    /// A positive absolute Unix time that has already passed.
    fn past(&mut self, unit: Unit) -> Vec<u8> {
        // Random draws never depend on t0: gen_range may consume a different amount of
        // randomness for a different range, and DIFF_SEED must replay the same stream later.
        let secs = match self.rng.gen_range(0..3) {
            0 => 1,
            1 => self.t0 - 3600,
            _ => self.rng.gen_range(1..1_700_000_000), // before November 2023
        };
        match unit {
            Unit::Seconds => secs.to_string(),
            Unit::Millis => (secs * 1000 + self.rng.gen_range(0..1000)).to_string(),
        }
        .into_bytes()
    }

    /// Malformed or extreme numbers. As relative times they are always rejected (not an
    /// integer, or overflow once added to the clock), so they never create a TTL that races;
    /// as absolute times the huge ones are valid but constant, which is deterministic too
    /// (`PEXPIREAT k 9223372036854775807` is accepted, and EXPIRETIME then rounds up).
    fn bad_time(&mut self, unit: Unit) -> Vec<u8> {
        let seconds_only: &[&[u8]] = &[b"9223372036854775", b"9223372036854775807"];
        let both: &[&[u8]] = &[
            b"abc",
            b"",
            b"1.5",
            b"9223372036854775807",
            b"-9223372036854775808",
            b"99999999999999999999",
            b"10s",
        ];
        match unit {
            Unit::Seconds if self.chance(0.3) => self.pick(seconds_only).to_vec(),
            _ => self.pick(both).to_vec(),
        }
    }

    fn nonpositive(&mut self) -> Vec<u8> {
        self.pick(&[b"0".as_slice(), b"-1", b"-100"]).to_vec()
    }

    /// A relative time argument for SET EX/PX, SETEX, GETEX EX/PX.
    fn ttl_arg(&mut self, unit: Unit) -> Vec<u8> {
        match self.rng.gen_range(0..10) {
            0..=5 => self.rel(unit),
            6 | 7 => self.bad_time(unit),
            _ => self.nonpositive(),
        }
    }

    /// An absolute time argument for SET EXAT/PXAT, GETEX EXAT/PXAT, EXPIREAT.
    fn at_arg(&mut self, unit: Unit) -> Vec<u8> {
        match self.rng.gen_range(0..10) {
            0..=4 => self.abs(unit),
            5 | 6 => self.past(unit),
            7 => self.nonpositive(),
            _ => self.bad_time(unit),
        }
    }

    fn step(&mut self, args: Vec<Vec<u8>>) -> Vec<Step> {
        vec![Step::exact(args)]
    }

    fn item(&mut self) -> Item {
        self.index += 1;
        if self.chance(0.004) {
            let n = self.rng.gen_range(20..200);
            let mut steps = Vec::with_capacity(n);
            while steps.len() < n {
                self.index += 1;
                // Only steps whose replies are compared on their own and that leave the
                // protocol alone (RESET would switch the decoder mid-batch).
                steps.extend(self.command().into_iter().filter(|s| {
                    matches!(s.check, Check::Exact | Check::Ttl(_)) && !s.name_is("RESET")
                }));
            }
            return Item::Pipeline(steps);
        }
        Item::Sequence(self.command())
    }

    fn command(&mut self) -> Vec<Step> {
        loop {
            let steps = self.any_command();
            let skipped = steps.iter().any(|step| {
                step.args()
                    .and_then(|args| args.first())
                    .is_some_and(|name| self.skip.contains(&name.to_ascii_lowercase()))
            });
            if !skipped {
                return steps;
            }
        }
    }

    fn any_command(&mut self) -> Vec<Step> {
        let roll = loop {
            let roll = self.rng.gen_range(0..1090);
            if roll < 1060 || !self.in_transaction {
                break roll;
            }
        };
        match roll {
            0..=89 => self.get(),
            90..=199 => self.set(),
            200..=219 => self.setnx(),
            220..=244 => self.setex(),
            245..=259 => self.getset_getdel(),
            260..=299 => self.getex(),
            300..=329 => self.mget(),
            330..=359 => self.mset(),
            360..=384 => self.append_strlen(),
            385..=424 => self.incr_family(),
            425..=454 => self.incrbyfloat(),
            455..=484 => self.getrange("getrange"),
            485..=509 => self.setrange(),
            510..=539 => self.del_family(),
            540..=569 => self.exists_family(),
            570..=584 => self.type_cmd(),
            585..=649 => self.expire_family(),
            650..=709 => self.ttl_family(),
            710..=724 => self.persist(),
            725..=744 => self.scan(),
            745..=759 => self.keys_cmd(),
            760..=767 => self.randomkey(),
            768..=792 => self.rename(),
            793..=804 => self.dbsize(),
            805..=824 => self.ping_echo(),
            825..=834 => self.select(),
            835..=849 => self.client(),
            850..=859 => self.hello(),
            860..=884 => self.unknown(),
            885..=934 => self.wrong_arity(),
            935..=969 => self.inline(),
            970..=973 => self.reset(),
            974..=977 => self.flush(),
            978..=985 => self.copy(),
            986..=990 => self.lcs(),
            991..=994 => self.getrange("substr"),
            995..=999 => self.introspection(),
            1000..=1009 => self.setbit(),
            1010..=1017 => self.getbit(),
            1018..=1027 => self.bitcount_bitpos(),
            1028..=1037 => self.bitop(),
            1038..=1059 => self.bitfield(),
            _ => self.transaction(),
        }
    }

    fn get(&mut self) -> Vec<Step> {
        let name = self.name("get");
        let key = self.key();
        self.step(vec![name, key])
    }

    fn set(&mut self) -> Vec<Step> {
        let mut args = vec![self.name("set"), self.key(), self.value()];
        let mut options: Vec<Vec<Vec<u8>>> = Vec::new();
        let n = self.rng.gen_range(0..=3);
        for _ in 0..n {
            let option = match self.rng.gen_range(0..12) {
                0 | 1 => vec![self.opt("NX")],
                2 | 3 => vec![self.opt("XX")],
                4 | 5 => vec![self.opt("GET")],
                6 => vec![self.opt("KEEPTTL")],
                7 => vec![self.opt("EX"), self.ttl_arg(Unit::Seconds)],
                8 => vec![self.opt("PX"), self.ttl_arg(Unit::Millis)],
                9 => vec![self.opt("EXAT"), self.at_arg(Unit::Seconds)],
                10 => vec![self.opt("PXAT"), self.at_arg(Unit::Millis)],
                // A dangling option keyword or an unknown one.
                _ => vec![self
                    .pick(&[b"EX".as_slice(), b"PX", b"EXAT", b"BOGUS", b"NXX"])
                    .to_vec()],
            };
            options.push(option);
        }
        for option in options {
            args.extend(option);
        }
        self.step(args)
    }

    fn setnx(&mut self) -> Vec<Step> {
        let args = vec![self.name("setnx"), self.key(), self.value()];
        self.step(args)
    }

    fn setex(&mut self) -> Vec<Step> {
        let args = if self.chance(0.5) {
            vec![
                self.name("setex"),
                self.key(),
                self.ttl_arg(Unit::Seconds),
                self.value(),
            ]
        } else {
            vec![
                self.name("psetex"),
                self.key(),
                self.ttl_arg(Unit::Millis),
                self.value(),
            ]
        };
        self.step(args)
    }

    fn getset_getdel(&mut self) -> Vec<Step> {
        let args = if self.chance(0.5) {
            vec![self.name("getset"), self.key(), self.value()]
        } else {
            vec![self.name("getdel"), self.key()]
        };
        self.step(args)
    }

    fn getex(&mut self) -> Vec<Step> {
        let mut args = vec![self.name("getex"), self.key()];
        let n = self.rng.gen_range(0..=2);
        for _ in 0..n {
            match self.rng.gen_range(0..7) {
                0 => args.extend([self.opt("EX"), self.ttl_arg(Unit::Seconds)]),
                1 => args.extend([self.opt("PX"), self.ttl_arg(Unit::Millis)]),
                2 => args.extend([self.opt("EXAT"), self.at_arg(Unit::Seconds)]),
                3 => args.extend([self.opt("PXAT"), self.at_arg(Unit::Millis)]),
                4 | 5 => args.push(self.opt("PERSIST")),
                _ => args.push(
                    self.pick(&[b"EX".as_slice(), b"KEEPTTL", b"NX", b"foo"])
                        .to_vec(),
                ),
            }
        }
        self.step(args)
    }

    fn mget(&mut self) -> Vec<Step> {
        let mut args = vec![self.name("mget")];
        args.extend(self.keys(1, 6));
        self.step(args)
    }

    fn mset(&mut self) -> Vec<Step> {
        let nx = !self.chance(0.7);
        let name = if nx {
            self.name("msetnx")
        } else {
            self.name("mset")
        };
        let mut args = vec![name];
        let pairs = self.rng.gen_range(1..=4);
        for _ in 0..pairs {
            let key = if nx {
                self.same_shard_key()
            } else {
                self.key()
            };
            args.push(key);
            args.push(self.value());
        }
        if self.chance(0.1) {
            // Odd arity: a key without its value.
            args.pop();
        }
        self.step(args)
    }

    fn append_strlen(&mut self) -> Vec<Step> {
        let args = if self.chance(0.6) {
            vec![self.name("append"), self.key(), self.value()]
        } else {
            vec![self.name("strlen"), self.key()]
        };
        self.step(args)
    }

    fn incr_family(&mut self) -> Vec<Step> {
        let key = if self.chance(0.4) && !self.tagged_only {
            b"counter".to_vec()
        } else {
            self.key()
        };
        let args = match self.rng.gen_range(0..4) {
            0 => vec![self.name("incr"), key],
            1 => vec![self.name("decr"), key],
            2 => vec![self.name("incrby"), key, self.int_arg()],
            _ => vec![self.name("decrby"), key, self.int_arg()],
        };
        self.step(args)
    }

    fn incrbyfloat(&mut self) -> Vec<Step> {
        let key = if self.chance(0.4) && !self.tagged_only {
            b"float".to_vec()
        } else {
            self.key()
        };
        let increment = self.pick(FLOAT_ARGS).to_vec();
        let args = vec![self.name("incrbyfloat"), key, increment];
        self.step(args)
    }

    fn offset(&mut self) -> Vec<u8> {
        match self.rng.gen_range(0..10) {
            0..=6 => self.rng.gen_range(-60i64..60).to_string().into_bytes(),
            7 => self
                .pick(&[b"9223372036854775807".as_slice(), b"-9223372036854775808"])
                .to_vec(),
            8 => self.pick(&[b"abc".as_slice(), b"", b"1.5"]).to_vec(),
            _ => self.pick(&[b"0".as_slice(), b"-1"]).to_vec(),
        }
    }

    /// GETRANGE, or SUBSTR, its old name.
    fn getrange(&mut self, name: &str) -> Vec<Step> {
        let args = vec![self.name(name), self.key(), self.offset(), self.offset()];
        self.step(args)
    }

    /// LCS with a random mix of its options, now and then a malformed one.
    fn lcs(&mut self) -> Vec<Step> {
        let mut args = vec![
            self.name("lcs"),
            self.same_shard_key(),
            self.same_shard_key(),
        ];
        for _ in 0..self.rng.gen_range(0..4) {
            match self.rng.gen_range(0..10) {
                0..=2 => args.push(self.opt("idx")),
                3 | 4 => args.push(self.opt("len")),
                5 | 6 => args.push(self.opt("withmatchlen")),
                7 | 8 => {
                    args.push(self.opt("minmatchlen"));
                    let n = self.pick(&[b"0".as_slice(), b"1", b"2", b"3", b"-1", b"x"]);
                    args.push(n.to_vec());
                }
                _ => args.push(self.pick(&[b"minmatchlen".as_slice(), b"bogus"]).to_vec()),
            }
        }
        self.step(args)
    }

    /// A bit offset: mostly within a few bytes, now and then at Redis's limit or past it.
    fn bit_offset(&mut self) -> Vec<u8> {
        match self.rng.gen_range(0..12) {
            0..=8 => self.rng.gen_range(0..80).to_string().into_bytes(),
            9 => b"4294967296".to_vec(),
            10 => b"-1".to_vec(),
            _ => self.pick(&[b"x".as_slice(), b"", b"1.5", b"#1"]).to_vec(),
        }
    }

    fn setbit(&mut self) -> Vec<Step> {
        let bit = self.pick(&[b"0".as_slice(), b"1", b"1", b"2", b"-1", b"x"]);
        let args = vec![
            self.name("setbit"),
            self.key(),
            self.bit_offset(),
            bit.to_vec(),
        ];
        self.step(args)
    }

    fn getbit(&mut self) -> Vec<Step> {
        let args = vec![self.name("getbit"), self.key(), self.bit_offset()];
        self.step(args)
    }

    /// BITCOUNT key [start end [BYTE|BIT]] or BITPOS key bit [start [end [BYTE|BIT]]], now
    /// and then with a count of arguments neither accepts.
    fn bitcount_bitpos(&mut self) -> Vec<Step> {
        let mut args = if self.chance(0.5) {
            vec![self.name("bitcount"), self.key()]
        } else {
            let bit = self.pick(&[b"0".as_slice(), b"1", b"1", b"0", b"2", b"x"]);
            vec![self.name("bitpos"), self.key(), bit.to_vec()]
        };
        for _ in 0..self.rng.gen_range(0..4) {
            args.push(self.offset());
        }
        if self.chance(0.3) {
            let unit = self.pick(&[b"BIT".as_slice(), b"byte", b"bit", b"bits"]);
            args.push(unit.to_vec());
        }
        self.step(args)
    }

    fn bitop(&mut self) -> Vec<Step> {
        let op = self.pick(&["and", "or", "xor", "not", "not", "nand"]);
        let mut args = vec![self.name("bitop"), self.opt(op), self.same_shard_key()];
        for _ in 0..self.rng.gen_range(1..4) {
            args.push(self.same_shard_key());
        }
        self.step(args)
    }

    /// BITFIELD (or BITFIELD_RO) with a random run of GET, SET, INCRBY and OVERFLOW, types of
    /// every width, `#n` offsets, and now and then a malformed operation.
    fn bitfield(&mut self) -> Vec<Step> {
        let mut args = if self.chance(0.25) {
            vec![self.name("bitfield_ro"), self.key()]
        } else {
            vec![self.name("bitfield"), self.key()]
        };
        for _ in 0..self.rng.gen_range(0..5) {
            let kind = match self.rng.gen_range(0..10) {
                0 => b"x8".to_vec(),
                1 => self
                    .pick(&[b"u64".as_slice(), b"i65", b"i0", b"U8", b""])
                    .to_vec(),
                n => {
                    let sign = if n % 2 == 0 { "i" } else { "u" };
                    let max = if sign == "i" { 64 } else { 63 };
                    let bits = if self.chance(0.5) {
                        self.rng.gen_range(1..=max)
                    } else {
                        *[1, 8, 16, 32, max].choose(&mut self.rng).unwrap_or(&8)
                    };
                    format!("{sign}{bits}").into_bytes()
                }
            };
            let offset = if self.chance(0.2) {
                format!("#{}", self.rng.gen_range(0..4)).into_bytes()
            } else {
                self.bit_offset()
            };
            match self.rng.gen_range(0..10) {
                0..=3 => args.extend([self.opt("get"), kind, offset]),
                4 | 5 => {
                    let value = self.int_arg();
                    args.extend([self.opt("set"), kind, offset, value]);
                }
                6 | 7 => {
                    let value = self.int_arg();
                    args.extend([self.opt("incrby"), kind, offset, value]);
                }
                8 => {
                    let mode = self.pick(&["wrap", "sat", "fail", "fail", "bogus"]);
                    args.extend([self.opt("overflow"), self.opt(mode)]);
                }
                _ => args.push(
                    self.pick(&[b"get".as_slice(), b"overflow", b"foo"])
                        .to_vec(),
                ),
            }
        }
        self.step(args)
    }

    fn setrange(&mut self) -> Vec<Step> {
        let value = self.value();
        let offset: Vec<u8> = match self.rng.gen_range(0..10) {
            0..=6 => self.rng.gen_range(0..64).to_string().into_bytes(),
            7 => b"-1".to_vec(),
            8 if !value.is_empty() => b"536870912".to_vec(), // past proto-max-bulk-len: an error, no allocation
            8 => b"536870911".to_vec(),                      // empty value: nothing is written
            _ => self.pick(&[b"abc".as_slice(), b"", b"1.5"]).to_vec(),
        };
        let args = vec![self.name("setrange"), self.key(), offset, value];
        self.step(args)
    }

    fn del_family(&mut self) -> Vec<Step> {
        let name = if self.chance(0.6) {
            self.name("del")
        } else {
            self.name("unlink")
        };
        let mut args = vec![name];
        args.extend(self.keys(1, 3));
        self.step(args)
    }

    fn exists_family(&mut self) -> Vec<Step> {
        let name = if self.chance(0.7) {
            self.name("exists")
        } else {
            self.name("touch")
        };
        let mut args = vec![name];
        args.extend(self.keys(1, 5));
        self.step(args)
    }

    fn type_cmd(&mut self) -> Vec<Step> {
        let args = vec![self.name("type"), self.key()];
        self.step(args)
    }

    fn expire_family(&mut self) -> Vec<Step> {
        let (name, value) = match self.rng.gen_range(0..4) {
            0 => (self.name("expire"), self.expire_arg(Unit::Seconds, false)),
            1 => (self.name("pexpire"), self.expire_arg(Unit::Millis, false)),
            2 => (self.name("expireat"), self.expire_arg(Unit::Seconds, true)),
            _ => (self.name("pexpireat"), self.expire_arg(Unit::Millis, true)),
        };
        let mut args = vec![name, self.key(), value];
        let n = match self.rng.gen_range(0..10) {
            0..=4 => 0,
            5..=8 => 1,
            _ => 2,
        };
        for _ in 0..n {
            let flag = match self.rng.gen_range(0..9) {
                0 | 1 => self.opt("NX"),
                2 | 3 => self.opt("XX"),
                4 | 5 => self.opt("GT"),
                6 | 7 => self.opt("LT"),
                _ => b"foo".to_vec(),
            };
            args.push(flag);
        }
        self.step(args)
    }

    fn expire_arg(&mut self, unit: Unit, absolute: bool) -> Vec<u8> {
        match (absolute, self.rng.gen_range(0..10)) {
            (false, 0..=5) => self.rel(unit),
            (false, 6 | 7) => self.nonpositive(), // in the past: deletes the key
            (true, 0..=4) => self.abs(unit),
            (true, 5..=7) => self.past(unit),
            (true, 8) => self.nonpositive(),
            _ => self.bad_time(unit),
        }
    }

    fn ttl_family(&mut self) -> Vec<Step> {
        let key = self.key();
        let (name, unit) = match self.rng.gen_range(0..4) {
            0 => ("ttl", TimeUnit::Seconds),
            1 => ("pttl", TimeUnit::Millis),
            2 => ("expiretime", TimeUnit::Seconds),
            _ => ("pexpiretime", TimeUnit::Millis),
        };
        vec![Step::new(vec![self.name(name), key], Check::Ttl(unit))]
    }

    fn persist(&mut self) -> Vec<Step> {
        let args = vec![self.name("persist"), self.key()];
        self.step(args)
    }

    fn scan(&mut self) -> Vec<Step> {
        let bad_cursor = self.chance(0.1);
        let cursor = if bad_cursor {
            self.pick(&[b"abc".as_slice(), b"1x", b" 1", b"18446744073709551616"])
                .to_vec()
        } else {
            b"0".to_vec()
        };
        let mut args = vec![self.name("scan"), cursor];
        if self.chance(0.5) {
            args.extend([self.opt("MATCH"), self.pick(GLOB_PATTERNS).to_vec()]);
        }
        if self.chance(0.5) {
            let count = self
                .pick(&[
                    b"1".as_slice(),
                    b"2",
                    b"5",
                    b"10",
                    b"1000",
                    b"0",
                    b"-1",
                    b"abc",
                ])
                .to_vec();
            args.extend([self.opt("COUNT"), count]);
        }
        if self.chance(0.3) {
            let kind = self
                .pick(&[
                    b"string".as_slice(),
                    b"STRING",
                    b"list",
                    b"hash",
                    b"none",
                    b"foo",
                ])
                .to_vec();
            args.extend([self.opt("TYPE"), kind]);
        }
        if self.chance(0.05) {
            args.push(
                self.pick(&[b"MATCH".as_slice(), b"COUNT", b"BOGUS"])
                    .to_vec(),
            );
        }
        vec![Step::new(args, Check::ScanAll)]
    }

    fn keys_cmd(&mut self) -> Vec<Step> {
        let pattern = self.pick(GLOB_PATTERNS).to_vec();
        vec![Step::new(vec![self.name("keys"), pattern], Check::Sorted)]
    }

    fn randomkey(&mut self) -> Vec<Step> {
        vec![Step::new(vec![self.name("randomkey")], Check::RandomKey)]
    }

    fn rename(&mut self) -> Vec<Step> {
        let name = if self.chance(0.6) {
            self.name("rename")
        } else {
            self.name("renamenx")
        };
        let from = self.same_shard_key();
        let to = if self.chance(0.15) {
            from.clone()
        } else {
            self.same_shard_key()
        };
        self.step(vec![name, from, to])
    }

    /// COPY with REPLACE and DB in any order, DB 0 (the only database), out of range or not
    /// a number, and now and then a malformed option.
    fn copy(&mut self) -> Vec<Step> {
        let from = self.same_shard_key();
        let to = if self.chance(0.1) {
            from.clone()
        } else {
            self.same_shard_key()
        };
        let mut args = vec![self.name("copy"), from, to];
        for _ in 0..self.rng.gen_range(0..3) {
            match self.rng.gen_range(0..10) {
                0..=3 => args.push(self.opt("replace")),
                4..=8 => {
                    args.push(self.opt("db"));
                    let db = [b"0".as_slice(), b"0", b"1", b"-1", b"x", b"2147483648"];
                    args.push(self.pick(&db).to_vec());
                }
                _ => args.push(self.pick(&[b"db".as_slice(), b"bogus"]).to_vec()),
            }
        }
        self.step(args)
    }

    /// OBJECT ENCODING / REFCOUNT right after a SET of the key (ringkv answers for the value
    /// as SET stores it, see the README), FREQ (not tracked, as Redis without an LFU policy)
    /// on any key, HELP, and MEMORY USAGE with a bad option.
    fn introspection(&mut self) -> Vec<Step> {
        let key = self.key();
        match self.rng.gen_range(0..7) {
            0..=3 => {
                let sub = if self.chance(0.5) {
                    self.opt("encoding")
                } else {
                    self.opt("refcount")
                };
                let value = self.value();
                vec![
                    Step::exact(vec![self.name("set"), key.clone(), value]),
                    Step::exact(vec![self.name("object"), sub, key]),
                ]
            }
            4 => {
                let args = vec![self.name("object"), self.opt("freq"), key];
                self.step(args)
            }
            5 => {
                let args = vec![self.name("object"), self.opt("help")];
                self.step(args)
            }
            // MEMORY USAGE's figure is ringkv's own (see the README); its option errors,
            // checked before the key is looked up, are Redis's.
            _ => {
                let bad: &[&[u8]] = match self.rng.gen_range(0..4) {
                    0 => &[b"samples", b"x"],
                    1 => &[b"SAMPLES", b"-1"],
                    2 => &[b"samples"],
                    _ => &[b"foo", b"1"],
                };
                let mut args = vec![self.name("memory"), self.opt("usage"), key];
                args.extend(bad.iter().map(|a| a.to_vec()));
                self.step(args)
            }
        }
    }

    fn dbsize(&mut self) -> Vec<Step> {
        vec![Step::new(vec![self.name("dbsize")], Check::Dbsize)]
    }

    fn ping_echo(&mut self) -> Vec<Step> {
        let args = match self.rng.gen_range(0..4) {
            0 => vec![self.name("ping")],
            1 => vec![self.name("ping"), self.value()],
            2 => vec![self.name("ping"), self.value(), self.value()],
            _ => vec![self.name("echo"), self.value()],
        };
        self.step(args)
    }

    fn select(&mut self) -> Vec<Step> {
        let db = self
            .pick(&[
                b"0".as_slice(),
                b"0",
                b"1",
                b"15",
                b"-1",
                b"abc",
                b"",
                b"99999999999999999999",
            ])
            .to_vec();
        let args = vec![self.name("select"), db];
        self.step(args)
    }

    fn client(&mut self) -> Vec<Step> {
        let client = self.name("client");
        let args = match self.rng.gen_range(0..8) {
            0..=2 => {
                let name = self
                    .pick(&[
                        b"conn-1".as_slice(),
                        b"worker_2",
                        b"",
                        b"bad name",
                        b"new\nline",
                        b"caf\xc3\xa9",
                    ])
                    .to_vec();
                vec![client, self.opt("SETNAME"), name]
            }
            3..=5 => vec![client, self.opt("GETNAME")],
            6 => vec![client, self.opt("SETNAME")],
            _ => vec![
                client,
                self.pick(&[b"NOSUCHSUB".as_slice(), b"getname2"]).to_vec(),
            ],
        };
        self.step(args)
    }

    fn hello(&mut self) -> Vec<Step> {
        let current: &[u8] = match self.protocol {
            Protocol::Resp2 => b"2",
            Protocol::Resp3 => b"3",
        };
        let hello = self.name("hello");
        let args = match self.rng.gen_range(0..8) {
            0 | 1 => vec![hello],
            2 | 3 => vec![hello, current.to_vec()],
            4 => vec![hello, self.pick(&[b"4".as_slice(), b"1", b"0"]).to_vec()],
            5 => vec![
                hello,
                self.pick(&[b"abc".as_slice(), b"", b"3.0", b"-3"]).to_vec(),
            ],
            6 => {
                let name = self.pick(&[b"hello-name".as_slice(), b"bad name"]).to_vec();
                vec![hello, current.to_vec(), self.opt("SETNAME"), name]
            }
            _ => vec![hello, current.to_vec(), b"foo".to_vec()],
        };
        vec![Step::new(args, Check::Hello)]
    }

    fn unknown(&mut self) -> Vec<Step> {
        let name = self.pick(UNKNOWN_COMMANDS).as_bytes().to_vec();
        let mut args = vec![name];
        let n = self.rng.gen_range(0..4);
        for _ in 0..n {
            let arg = match self.rng.gen_range(0..4) {
                0 => "x".repeat(self.rng.gen_range(100..200)).into_bytes(),
                1 => b"".to_vec(),
                _ => format!("arg{}", self.rng.gen_range(0..100)).into_bytes(),
            };
            args.push(arg);
        }
        if self.chance(0.05) {
            args = vec![b"".to_vec()];
        }
        self.step(args)
    }

    fn wrong_arity(&mut self) -> Vec<Step> {
        let (name, arity) = self.pick(ARITIES);
        let count = if arity > 0 {
            // Anything but the exact count.
            let exact = arity - 1;
            let mut n = self.rng.gen_range(0..=exact + 2);
            if n == exact {
                n += 1;
            }
            n
        } else {
            let min = -arity - 1;
            self.rng.gen_range(0..min)
        };
        let mut args = vec![self.name(name)];
        for _ in 0..count {
            args.push(self.key());
        }
        self.step(args)
    }

    fn inline(&mut self) -> Vec<Step> {
        let lines: [&[u8]; 16] = [
            b"SET k1 v\r\n",
            b"GET k1\r\n",
            b"set k2 hello\n",
            b"get k2\n",
            b"  ECHO   spaced   \r\n",
            b"PING\r\n",
            b"INCR counter\r\n",
            b"DEL k1 k2\r\n",
            b"SET \"space key\" \"with\\x00nul\\r\\n\"\r\n",
            b"GET \"space key\"\r\n",
            b"EXISTS 'k1' \"k2\" k3\r\n",
            b"SET \"\" ''\r\n",
            b"GET \"\"\r\n",
            b"ECHO \"tab\\there\" 'it\\'s'\r\n",
            b"MSET {user}:1 a {user}:2 b\r\n",
            b"MGET {user}:1 {user}:2 {user}:3\r\n",
        ];
        let line = self.pick(&lines).to_vec();
        vec![Step {
            wire: Wire::Inline(line),
            check: Check::Exact,
        }]
    }

    /// MULTI, a few commands from the other generators, then EXEC (or DISCARD); sometimes
    /// after WATCH, and a write of a watched key by this client that makes EXEC answer nil.
    /// Now and then a command that cannot be queued (EXECABORT), or MULTI or WATCH inside
    /// (errors that keep the transaction). Through a cluster every key is tagged, so the
    /// transaction's keys share a shard; commands that walk or clear every shard are left
    /// out there (a cluster proxy refuses them in a transaction).
    fn transaction(&mut self) -> Vec<Step> {
        let mut steps = Vec::new();
        self.tagged_only = self.target == Target::Cluster;
        if self.chance(0.4) {
            let n = self.rng.gen_range(1..=3);
            let watched: Vec<Vec<u8>> = (0..n).map(|_| self.key()).collect();
            let mut args = vec![self.name("watch")];
            args.extend(watched.iter().cloned());
            steps.push(Step::exact(args));
            if self.chance(0.4) {
                // A value no key held before: WATCH compares what the key reads.
                let key = watched[self.rng.gen_range(0..watched.len())].clone();
                let value = format!("watched-{}", self.index).into_bytes();
                steps.push(Step::exact(vec![self.name("set"), key, value]));
            }
            if self.chance(0.15) {
                steps.push(Step::exact(vec![self.name("unwatch")]));
            }
        }
        steps.push(Step::exact(vec![self.name("multi")]));
        self.in_transaction = true;
        let queued = self.rng.gen_range(0..=6);
        let mut count = 0;
        while count < queued {
            let cluster = self.target == Target::Cluster;
            let inner: Vec<Step> = self
                .command()
                .into_iter()
                .filter(|s| {
                    s.check == Check::Exact
                        && !s.name_is("RESET")
                        && !s.name_is("HELLO")
                        // Redis's count includes the queued SET's own reference to its value.
                        && !s.name_is("OBJECT")
                        && !(cluster
                            && (matches!(s.wire, Wire::Inline(_))
                                || s.name_is("FLUSHALL")
                                || s.name_is("FLUSHDB")))
                })
                .collect();
            count += inner.len().max(1);
            steps.extend(inner);
            match self.rng.gen_range(0..60) {
                0 => steps.push(Step::exact(vec![self.name("multi")])),
                1 => steps.push(Step::exact(vec![self.name("watch"), self.key()])),
                2 => steps.push(Step::exact(vec![b"NOSUCHCOMMAND".to_vec()])),
                _ => {}
            }
        }
        self.in_transaction = false;
        self.tagged_only = false;
        let end = if self.chance(0.85) { "exec" } else { "discard" };
        steps.push(Step::exact(vec![self.name(end)]));
        steps
    }

    fn reset(&mut self) -> Vec<Step> {
        let mut steps = vec![Step::exact(vec![self.name("reset")])];
        if self.protocol == Protocol::Resp3 {
            steps.push(Step::new(
                vec![b"HELLO".to_vec(), b"3".to_vec()],
                Check::Hello,
            ));
        }
        steps
    }

    fn flush(&mut self) -> Vec<Step> {
        let name = if self.chance(0.5) {
            self.name("flushdb")
        } else {
            self.name("flushall")
        };
        let mut args = vec![name];
        match self.rng.gen_range(0..5) {
            0 => args.push(self.opt("ASYNC")),
            1 => args.push(self.opt("SYNC")),
            2 => args.push(b"foo".to_vec()),
            _ => {}
        }
        self.step(args)
    }
}
