//! A full disk: a write the server acknowledged survives it. When RocksDB cannot write the
//! WAL (ENOSPC), the writes of that batch are in memory only; the server must not answer
//! them OK. It closes that connection unanswered instead (what a crash would show the
//! client), refuses later writes with an error, and keeps serving reads.
//!
//! The server runs on a small tmpfs mounted in its own user and mount namespace
//! (`unshare --user --map-root-user --mount`, no privileges needed where unprivileged user
//! namespaces are allowed, as on Debian), so the test fills a disk of its own and nothing
//! else. The data directory is copied out through `/proc/<pid>/root` while the server runs,
//! then opened by a second server on the ordinary disk.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ringkv_integration::{
    encode_command, free_port, poll_until, ringkv_bin, Reply, RespClient, Server,
};

/// Small enough to fill in a few seconds, large enough for RocksDB's empty database (its
/// WAL is preallocated: ~80 MB of a tmpfs at start).
const TMPFS_SIZE: &str = "160m";
/// Large values fill the WAL fast.
const VALUE_BYTES: usize = 64 << 10;
const PIPELINE: usize = 32;
/// Far more than fits: if every write is still acknowledged by then, the disk never filled.
const MAX_WRITES: usize = 20_000;

fn value_for(i: usize) -> Vec<u8> {
    let mut value = format!("value-{i}-").into_bytes();
    value.resize(VALUE_BYTES, b'a' + (i % 26) as u8);
    value
}

/// Kills the namespaced server when the test ends, however it ends.
struct Namespaced(Child);

impl Drop for Namespaced {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts ringkv with its `--dir` on a fresh tmpfs of [`TMPFS_SIZE`] at `mount_point`,
/// visible only to it; the pid is ringkv's (sh execs it).
fn start_on_tmpfs(mount_point: &Path, port: u16, log: &Path) -> Namespaced {
    let log = fs::File::create(log).expect("creating the server log");
    let log_err = log.try_clone().expect("cloning the server log handle");
    let child = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg(
            r#"mount -t tmpfs -o size="$1" tmpfs "$2" && exec "$3" --bind 127.0.0.1 --port "$4" --dir "$2/data""#,
        )
        .arg("sh")
        .arg(TMPFS_SIZE)
        .arg(mount_point)
        .arg(ringkv_bin())
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .expect("running unshare (util-linux)");
    Namespaced(child)
}

fn connect(port: u16) -> Option<RespClient> {
    let addr = ([127, 0, 0, 1], port).into();
    let mut client = RespClient::connect_timeout(addr, Duration::from_secs(1)).ok()?;
    client.set_read_timeout(Duration::from_secs(30)).ok()?;
    Some(client)
}

/// Pipelines SETs of `fill:<i>` until a batch is not answered OK throughout; returns how many
/// were acknowledged (always a prefix: replies come in order) and what ended it.
fn fill(client: &mut RespClient) -> (usize, String) {
    let mut acked = 0;
    while acked < MAX_WRITES {
        let mut batch = Vec::new();
        for i in acked..acked + PIPELINE {
            let key = format!("fill:{i}");
            batch.extend(encode_command(&[
                b"SET".as_slice(),
                key.as_bytes(),
                &value_for(i),
            ]));
        }
        if let Err(err) = client.send_raw(&batch) {
            return (acked, format!("sending: {err}"));
        }
        for _ in 0..PIPELINE {
            match client.read_reply() {
                Ok(Reply::Simple(ok)) if ok == b"OK" => acked += 1,
                Ok(other) => return (acked, format!("reply {other}")),
                Err(err) => return (acked, format!("reading: {err}")),
            }
        }
    }
    panic!("{MAX_WRITES} SETs of {VALUE_BYTES} bytes all acknowledged on a {TMPFS_SIZE} tmpfs");
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("creating the copy's directory");
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("reading {}: {e}", from.display())) {
        let entry = entry.expect("listing the data directory");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target)
                .unwrap_or_else(|e| panic!("copying {}: {e}", entry.path().display()));
        }
    }
}

#[test]
fn no_write_is_acknowledged_that_a_full_disk_lost() {
    let work = tempfile::Builder::new()
        .prefix("ringkv-disk-full-")
        .tempdir()
        .expect("creating a temporary directory");
    let mount_point = work.path().join("mnt");
    fs::create_dir(&mount_point).expect("creating the mount point");
    let log = work.path().join("server.log");
    let port = free_port();
    let mut server = start_on_tmpfs(&mount_point, port, &log);
    let server_log = || fs::read_to_string(&log).unwrap_or_default();
    let mut client = poll_until(
        Duration::from_secs(30),
        "ringkv on a tmpfs to answer",
        || {
            if let Ok(Some(status)) = server.0.try_wait() {
                panic!("the server exited with {status}:\n{}", server_log());
            }
            let mut client = connect(port)?;
            (client.cmd(&["PING"]) == Reply::Simple(b"PONG".to_vec())).then_some(client)
        },
    );

    let (acked, ended) = fill(&mut client);
    assert!(
        acked > 0,
        "no SET acknowledged before the disk filled ({ended})"
    );

    // The server is still up: reads answer, a new write is refused with an error.
    let mut after = connect(port).unwrap_or_else(|| panic!("reconnecting:\n{}", server_log()));
    assert_eq!(
        after.command(&[b"GET".as_slice(), b"fill:0"]),
        Ok(Reply::Bulk(value_for(0))),
        "a read after the disk filled"
    );
    let refused = after.cmd(&["SET", "after-full", "x"]);
    assert!(
        refused.is_error(),
        "a SET on a full disk answered {refused}, not an error"
    );
    // Whichever write met the full disk first (a SET's own log append, or the batch's log
    // write before its replies), the log names the cause.
    assert!(
        server_log().contains("No space left on device"),
        "the server did not log the full disk:\n{}",
        server_log()
    );

    // What a restart would find: the data directory as it is now, opened by a new server.
    let pid = server.0.id();
    let live_dir = Path::new("/proc")
        .join(pid.to_string())
        .join("root")
        .join(mount_point.strip_prefix("/").expect("an absolute path"))
        .join("data");
    let copy = work.path().join("copy");
    copy_dir(&live_dir, &copy);
    drop(server);

    let reopened = Server::ringkv_in(&copy, &[]);
    let mut reader = reopened.connect();
    for i in 0..acked {
        let key = format!("fill:{i}");
        let reply = reader
            .command(&[b"GET".as_slice(), key.as_bytes()])
            .unwrap_or_else(|e| panic!("GET {key}: {e}"));
        assert!(
            reply == Reply::Bulk(value_for(i)),
            "{key} was acknowledged ({acked} SETs were, then: {ended}) but is {} after a \
             restart",
            if reply == Reply::Null {
                "missing"
            } else {
                "different"
            }
        );
    }
}
