//! A proxy in front of a storage node that refuses requests (`STALE`: the node's map is
//! behind the proxy's), against a real etcd and the real `ringkv-proxy`: the proxy sends a
//! refused request again (a refused multi-shard part per shard), the client never sees the
//! refusal, and a request refused every time ends in `TRYAGAIN` after the proxy's bounded
//! number of tries.
//!
//! The node is a fake (a thread answering RESP on a real TCP port), registered in etcd with
//! the helpers a storage node uses: a real node only refuses while a map changes hands,
//! which a test cannot time.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use ringkv_common::etcd::{ClusterStore, NodeLease};
use ringkv_common::placement::shard_of;
use ringkv_common::ring::Ring;
use ringkv_common::shardmap::{ClusterConfig, NodeInfo, ShardMap};
use ringkv_integration::cluster::proxy_bin;
use ringkv_integration::etcd::Etcd;
use ringkv_integration::{free_port, poll_until, Reply, RespClient};
use tokio::runtime::Runtime;

/// The proxy's tries for one request (`MAX_ATTEMPTS` in proxy/src/cluster/mod.rs).
const PROXY_TRIES: usize = 6;

/// Keys the fake node refuses: every time, or the first time it sees them.
const REFUSED_ALWAYS: &str = "refused-always";
const REFUSED_ONCE: &str = "refused-once";

/// The requests the fake node got for each key, in order: `SHARD` or `SHARDS`, and how many
/// keys the request carried.
type Seen = Arc<Mutex<HashMap<String, Vec<(&'static str, usize)>>>>;

/// Reads one RESP array of bulk strings (a request as the proxy sends it); `None` at EOF.
fn read_request(reader: &mut impl BufRead) -> Option<Vec<String>> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let count: usize = line.trim_end().strip_prefix('*')?.parse().ok()?;
    let mut args = Vec::with_capacity(count);
    for _ in 0..count {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let len: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
        let mut arg = vec![0; len + 2];
        reader.read_exact(&mut arg).ok()?;
        arg.truncate(len);
        args.push(String::from_utf8(arg).ok()?);
    }
    Some(args)
}

/// Serves one proxy connection: `SHARD <shard> <epoch> GET <key>` is answered with the key
/// as a bulk string, `… MGET <key>…` (in `SHARD` or in `SHARDS <epoch>`) with the keys; a
/// request with a refused key is refused with `STALE`.
fn serve(stream: TcpStream, seen: Seen) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while let Some(args) = read_request(&mut reader) {
        let (kind, command) = match args.first().map(String::as_str) {
            Some("SHARD") => ("SHARD", args.get(3..)),
            Some("SHARDS") => ("SHARDS", args.get(2..)),
            _ => ("", None),
        };
        let reply = match command {
            Some([name, keys @ ..]) if !keys.is_empty() => {
                let mut seen = seen.lock().expect("seen lock");
                let mut refuse = false;
                for key in keys {
                    let requests = seen.entry(key.clone()).or_default();
                    requests.push((kind, keys.len()));
                    refuse |= key == REFUSED_ALWAYS || (key == REFUSED_ONCE && requests.len() == 1);
                }
                if refuse {
                    "-STALE 1\r\n".to_string()
                } else if name == "MGET" {
                    let mut out = format!("*{}\r\n", keys.len());
                    for key in keys {
                        out.push_str(&format!("${}\r\n{key}\r\n", key.len()));
                    }
                    out
                } else {
                    format!("${}\r\n{}\r\n", keys[0].len(), keys[0])
                }
            }
            _ => "-ERR the fake node serves only SHARD and SHARDS requests\r\n".to_string(),
        };
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// Starts the fake node; returns its address and what it has seen.
fn fake_node() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake node");
    let addr = listener.local_addr().expect("fake node address");
    let seen: Seen = Arc::default();
    let shared = Arc::clone(&seen);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let seen = Arc::clone(&shared);
            thread::spawn(move || serve(stream, seen));
        }
    });
    (addr, seen)
}

/// A `ringkv-proxy` process, killed when dropped.
struct Proxy {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    fn start(etcd: &Etcd, cluster: &str) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = std::fs::File::create(dir.path().join("proxy.log")).expect("proxy log");
        let port = free_port();
        let child = Command::new(proxy_bin())
            .args(["--etcd", &etcd.url(), "--cluster", cluster])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", proxy_bin().display()));
        Proxy {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("proxy.log")).unwrap_or_default()
    }
}

/// etcd, a cluster of 4 shards whose map puts them all on the fake node, and a proxy that
/// routes to it (its probe `GET` answered).
struct Setup {
    proxy: Proxy,
    seen: Seen,
    _lease: NodeLease,
    _rt: Runtime,
    _etcd: Etcd,
}

fn setup() -> Setup {
    let etcd = Etcd::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let cluster = "refusals";
    let store = rt
        .block_on(ClusterStore::connect(&[etcd.url()], cluster))
        .expect("connect to etcd");
    let config = ClusterConfig::new(4, 1, 0).expect("config");
    rt.block_on(store.init_config(&config)).expect("init");
    let (addr, seen) = fake_node();
    let node = NodeInfo {
        id: "fake".to_string(),
        addr: addr.to_string(),
        zone: String::new(),
        weight: 1,
    };
    let lease = rt
        .block_on(store.register_node(&node, Duration::from_secs(60)))
        .expect("register the fake node");
    let ring = Ring::new([node.ring_node()]).expect("ring");
    let map = ShardMap::from_ring(1, &ring, &config, None).expect("map");
    rt.block_on(store.write_map(None, &map)).expect("write map");
    let proxy = Proxy::start(&etcd, cluster);
    poll_until(Duration::from_secs(30), "the proxy to route", || {
        let mut client = RespClient::connect(proxy.addr).ok()?;
        let reply = client.command(&["GET", "probe"]).ok()?;
        (reply == Reply::Bulk(b"probe".to_vec())).then_some(())
    });
    Setup {
        proxy,
        seen,
        _lease: lease,
        _rt: rt,
        _etcd: etcd,
    }
}

/// The requests the fake node got for `key`, with how many keys each carried.
fn requests_for(seen: &Seen, key: &str) -> Vec<(&'static str, usize)> {
    seen.lock()
        .expect("seen lock")
        .get(key)
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_refused_request_is_sent_again_and_the_pipeline_keeps_its_order() {
    let setup = setup();
    let mut client = RespClient::connect(setup.proxy.addr).expect("connect");
    // One pipelined batch: the refused request is answered in its place.
    let keys = ["before", REFUSED_ONCE, "after"];
    let batch: Vec<u8> = keys
        .iter()
        .flat_map(|key| ringkv_integration::encode_command(&["GET", key]))
        .collect();
    client.send_raw(&batch).expect("send the batch");
    for key in keys {
        let reply = client
            .read_reply()
            .unwrap_or_else(|e| panic!("reply to GET {key}: {e}\n{}", setup.proxy.log()));
        assert_eq!(reply, Reply::Bulk(key.as_bytes().to_vec()), "GET {key}");
    }
    assert_eq!(
        requests_for(&setup.seen, REFUSED_ONCE),
        [("SHARD", 1), ("SHARD", 1)],
        "refused once, then sent again"
    );
    assert_eq!(requests_for(&setup.seen, "after"), [("SHARD", 1)]);
}

#[test]
fn a_request_refused_every_time_ends_in_tryagain_after_the_proxys_tries() {
    let setup = setup();
    let mut client = RespClient::connect(setup.proxy.addr).expect("connect");
    let reply = client
        .command(&["GET", REFUSED_ALWAYS])
        .unwrap_or_else(|e| panic!("GET: {e}\n{}", setup.proxy.log()));
    match &reply {
        Reply::Error(text) => assert!(text.starts_with(b"TRYAGAIN shard "), "{reply}"),
        other => panic!("expected TRYAGAIN, got {other}"),
    }
    assert_eq!(requests_for(&setup.seen, REFUSED_ALWAYS).len(), PROXY_TRIES);
    // The connection goes on serving.
    assert_eq!(
        client.command(&["GET", "next"]).expect("GET next"),
        Reply::Bulk(b"next".to_vec())
    );
}

#[test]
fn a_refused_multi_shard_part_is_sent_again_per_shard_and_merged_in_key_order() {
    let setup = setup();
    // Keys over at least two of the 4 shards, the refused one among them.
    let mut keys: Vec<String> = vec![REFUSED_ONCE.to_string()];
    keys.extend((0..8).map(|i| format!("key:{i}")));
    let shards: std::collections::HashSet<u32> =
        keys.iter().map(|k| shard_of(k.as_bytes(), 4)).collect();
    assert!(shards.len() > 1, "the keys span one shard only: {shards:?}");
    let mut client = RespClient::connect(setup.proxy.addr).expect("connect");
    let mut mget = vec!["MGET".to_string()];
    mget.extend(keys.iter().cloned());
    let reply = client
        .command(&mget)
        .unwrap_or_else(|e| panic!("MGET: {e}\n{}", setup.proxy.log()));
    let expected: Vec<Reply> = keys
        .iter()
        .map(|k| Reply::Bulk(k.as_bytes().to_vec()))
        .collect();
    assert_eq!(reply, Reply::Array(expected));
    // One node: the whole MGET went as one SHARDS part, which was refused; then each
    // shard's keys went on their own, as one SHARD request per shard.
    for key in &keys {
        let shard = shard_of(key.as_bytes(), 4);
        let in_shard = keys
            .iter()
            .filter(|k| shard_of(k.as_bytes(), 4) == shard)
            .count();
        assert_eq!(
            requests_for(&setup.seen, key),
            [("SHARDS", keys.len()), ("SHARD", in_shard)],
            "{key}"
        );
    }
}
