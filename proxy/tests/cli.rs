//! The `ringkv` binary as a user and a service manager see it: help, one-line errors that
//! name the flag with exit code 2, and a clean exit 0 on SIGTERM after serving.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

fn ringkv(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(args)
        .output()
        .expect("run ringkv")
}

#[test]
fn help_documents_every_flag() {
    let out = ringkv(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--bind",
        "--port",
        "--dir",
        "--shards",
        "--in-memory",
        "--fsync",
        "[default: everysec]",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn bad_flags_are_one_line_naming_the_flag_and_exit_2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").expect("write");
    let under_file = file.join("sub");
    let under_file = under_file.to_str().expect("utf8");
    for (args, flag) in [
        (&["--shards", "0"][..], "--shards"),
        (&["--shards", "abc"], "--shards"),
        (&["--port", "99999"], "--port"),
        (&["--fsync", "sometimes"], "--fsync"),
        (&["--dir", under_file], "--dir"),
        (&["--nope"], "--nope"),
    ] {
        let out = ringkv(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("ringkv: ") && err.contains(flag),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn serves_then_exits_0_on_sigterm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args([
            "--port",
            "0",
            "--shards",
            "4",
            "--dir",
            dir.to_str().expect("utf8"),
        ])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut log = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    log.read_line(&mut line).expect("startup line");
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("address in the log");

    let mut client = TcpStream::connect(addr).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    client.write_all(b"*1\r\n$4\r\nPING\r\n").expect("write");
    let mut reply = [0u8; 7];
    client.read_exact(&mut reply).expect("reply");
    assert_eq!(&reply, b"+PONG\r\n");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    let mut rest = String::new();
    log.read_to_string(&mut rest).expect("log");
    assert!(rest.contains("storage flushed"), "{rest}");
    let mut buf = [0u8; 1];
    assert_eq!(
        client.read(&mut buf).unwrap_or(0),
        0,
        "the connection was closed"
    );
}
