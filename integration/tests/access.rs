//! Access control against a real redis-server: `--requirepass` and `--aclfile` give the same
//! replies, byte for byte, to the same command sequences (NOAUTH, WRONGPASS, NOPERM, AUTH in
//! its forms, RESET); `redis-cli -a` works; a proxy of a cluster enforces the same rules; a bad
//! ACL file stops the server at start with the line that is wrong.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ringkv_integration::cluster::Cluster;
use ringkv_integration::{
    escape, redis_cli_bin, ringkv_bin, run_with_deadline, write_file, RespClient, Server,
};

/// An ACL file both servers load: an open default user, a restricted one, a disabled one.
const ACL: &str = "\
user default on nopass ~* &* +@all
user alice on >secret ~app:* +@read +@write -@admin
user bob off >pw ~* +@all
user carol on >c4rol ~* +@read -@all +get
";

/// Sends each command on one connection to both servers and requires the same reply bytes.
fn same_replies(ringkv: &mut RespClient, redis: &mut RespClient, script: &[&[&str]]) {
    for command in script {
        let ours = ringkv.command_frame(command).expect("ringkv answers");
        let theirs = redis.command_frame(command).expect("redis-server answers");
        assert_eq!(
            escape(&ours.raw),
            escape(&theirs.raw),
            "{command:?}: ringkv (left) and redis-server (right) differ"
        );
    }
}

#[test]
fn requirepass_answers_as_redis_server() {
    let ringkv = Server::ringkv(&["--requirepass", "sekret"]);
    let redis = Server::redis(&["--requirepass", "sekret"]);
    let (mut ours, mut theirs) = (ringkv.connect(), redis.connect());
    same_replies(
        &mut ours,
        &mut theirs,
        &[
            &["PING"],
            &["GET", "k"],
            &["SET", "k", "v"],
            &["CLIENT", "SETNAME", "x"],
            &["MULTI"],
            &["EXEC"],
            &["HELLO", "3"],
            &["HELLO", "2", "AUTH", "default", "wrong"],
            &["AUTH"],
            &["AUTH", "wrong"],
            &["AUTH", "default", "wrong"],
            &["AUTH", "nobody", "sekret"],
            &["AUTH", "a", "b", "c"],
            &["AUTH", "sekret"],
            &["SET", "k", "v"],
            &["GET", "k"],
            &["RESET"],
            &["GET", "k"],
            &["AUTH", "default", "sekret"],
            &["GET", "k"],
            &["MSET", "a", "1", "b", "2"],
            &["MGET", "a", "b"],
        ],
    );
    // A pipeline of writes from an unauthenticated client writes nothing.
    let mut fresh = ringkv.connect();
    fresh
        .send_raw(
            b"*3\r\n$3\r\nSET\r\n$1\r\nz\r\n$1\r\n1\r\n*3\r\n$3\r\nSET\r\n$1\r\nz\r\n$1\r\n2\r\n",
        )
        .expect("send");
    for _ in 0..2 {
        let reply = fresh.read_frame().expect("a reply");
        assert_eq!(escape(&reply.raw), "-NOAUTH Authentication required.\\r\\n");
    }
    let mut admin = ringkv.connect();
    admin.cmd(&["AUTH", "sekret"]);
    assert!(
        admin.cmd(&["GET", "z"]).as_bytes().is_none(),
        "z was not written"
    );
}

#[test]
fn redis_cli_dash_a_authenticates() {
    let ringkv = Server::ringkv(&["--requirepass", "sekret"]);
    let port = ringkv.port().to_string();
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(redis_cli_bin());
        cmd.args(["-p", &port]).args(extra);
        let out = run_with_deadline(&mut cmd, b"", Duration::from_secs(20));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        run(&["-a", "sekret", "--no-auth-warning", "SET", "cli", "ok"]),
        "OK"
    );
    assert_eq!(
        run(&["-a", "sekret", "--no-auth-warning", "GET", "cli"]),
        "ok"
    );
    assert_eq!(
        run(&[
            "--user",
            "default",
            "--pass",
            "sekret",
            "--no-auth-warning",
            "GET",
            "cli"
        ]),
        "ok"
    );
    assert_eq!(run(&["GET", "cli"]), "NOAUTH Authentication required.");
}

#[test]
fn acl_file_permissions_answer_as_redis_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("users.acl");
    write_file(&path, ACL.as_bytes());
    let file = path.to_str().expect("utf-8 path");
    let ringkv = Server::ringkv(&["--aclfile", file]);
    let redis = Server::redis(&["--aclfile", file]);
    let (mut ours, mut theirs) = (ringkv.connect(), redis.connect());
    same_replies(
        &mut ours,
        &mut theirs,
        &[
            &["SET", "app:1", "x"],
            &["AUTH", "bob", "pw"],
            &["AUTH", "alice", "wrong"],
            &["AUTH", "alice", "secret"],
            &["SET", "app:1", "x"],
            &["SET", "other", "y"],
            &["GET", "app:1"],
            &["GET", "other"],
            // A command refused inside MULTI fails the transaction: EXECABORT.
            &["MULTI"],
            &["SET", "app:1", "in-multi"],
            &["GET", "other"],
            &["EXEC"],
            &["WATCH", "other"],
            &["MULTI"],
            &["SET", "app:1", "in-multi"],
            &["EXEC"],
            &["MGET", "app:1", "app:2"],
            &["MGET", "app:1", "other"],
            &["MSET", "app:2", "b", "other", "c"],
            &["INCR", "app:n"],
            &["EXISTS", "app:1", "app:n"],
            &["DEL", "app:2"],
            &["RENAME", "app:1", "other"],
            &["CONFIG", "GET", "port"],
            &["DBSIZE"],
            &["AUTH", "carol", "c4rol"],
            &["GET", "app:1"],
            &["SET", "app:1", "z"],
            &["TTL", "app:1"],
            &["CLIENT", "SETNAME", "c"],
            &["AUTH", "default", "anything"],
            &["SET", "other", "y"],
            &["GET", "other"],
        ],
    );
}

#[test]
fn a_proxy_enforces_the_acl_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("users.acl");
    write_file(&path, ACL.as_bytes());
    let file = path.to_str().expect("utf-8 path");
    let cluster = Cluster::builder()
        .nodes(2)
        .proxies(1)
        .shards(8)
        .proxy_args(&["--aclfile", file])
        .start();
    let mut client = cluster.proxy(0);
    let text = |client: &mut RespClient, words: &[&str]| {
        let frame = client.command_frame(words).expect("a reply");
        escape(&frame.raw)
    };
    assert_eq!(
        text(&mut client, &["AUTH", "alice", "wrong"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\\r\\n"
    );
    assert_eq!(text(&mut client, &["AUTH", "alice", "secret"]), "+OK\\r\\n");
    assert_eq!(text(&mut client, &["SET", "app:1", "x"]), "+OK\\r\\n");
    assert_eq!(
        text(&mut client, &["SET", "other", "y"]),
        "-NOPERM this user has no permissions to access one of the keys used as arguments\\r\\n"
    );
    // Through the proxy's pipelined path too: the refused request is answered in order and
    // not sent to any storage node.
    client
        .send_raw(b"*2\r\n$3\r\nGET\r\n$5\r\napp:1\r\n*2\r\n$3\r\nGET\r\n$5\r\nother\r\n*2\r\n$3\r\nGET\r\n$5\r\napp:1\r\n")
        .expect("send");
    let replies: Vec<String> = (0..3)
        .map(|_| escape(&client.read_frame().expect("a reply").raw))
        .collect();
    assert_eq!(
        replies,
        [
            "$1\\r\\nx\\r\\n",
            "-NOPERM this user has no permissions to access one of the keys used as arguments\\r\\n",
            "$1\\r\\nx\\r\\n"
        ]
    );
    assert_eq!(
        text(&mut client, &["CONFIG", "GET", "port"]),
        "-NOPERM this user has no permissions to run the 'config|get' command\\r\\n"
    );
}

#[test]
fn a_bad_acl_file_stops_the_server_naming_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("users.acl");
    write_file(&path, b"user alice on >pw +@read\nuser bob on +@nosuch\n");
    let out = run_ringkv(&path, dir.path());
    assert_eq!(out.0, Some(2), "exit code; stderr: {}", out.1);
    assert!(
        out.1.contains("--aclfile") && out.1.contains("line 2") && out.1.contains("@nosuch"),
        "stderr names the flag, the line and the rule: {}",
        out.1
    );
}

/// Runs `ringkv --aclfile path` (which must fail at once) and returns its exit code and stderr.
fn run_ringkv(acl: &Path, dir: &Path) -> (Option<i32>, String) {
    let mut cmd = Command::new(ringkv_bin());
    cmd.arg("--port")
        .arg("0")
        .arg("--dir")
        .arg(dir.join("data"))
        .arg("--aclfile")
        .arg(acl);
    let out = run_with_deadline(&mut cmd, b"", Duration::from_secs(20));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
