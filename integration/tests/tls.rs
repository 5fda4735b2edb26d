//! TLS on the client port, driven by `redis-cli --tls`: certificates are made for the test by
//! the `openssl` command line (a CA, a server certificate for 127.0.0.1, a client certificate).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use std::process::{Child, Stdio};

use ringkv_integration::cluster::{proxy_bin, Cluster};
use ringkv_integration::{free_port, poll_until, redis_cli_bin, ringkv_bin, run_with_deadline};

/// A server process started by this test (the harness probes with plain PING, which a TLS
/// port does not answer); killed by pid when dropped.
struct Spawned {
    child: Child,
    port: u16,
}

impl Spawned {
    /// Starts `program` with `args` plus the listening flags `listen(port)`, and waits until
    /// `redis-cli <tls_args> PING` answers PONG.
    fn start(
        program: PathBuf,
        args: &[String],
        listen: impl Fn(u16) -> Vec<String>,
        tls_args: &[&str],
    ) -> Spawned {
        let port = free_port();
        let child = Command::new(program)
            .args(args)
            .args(listen(port))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning the server");
        let mut spawned = Spawned { child, port };
        poll_until(
            Duration::from_secs(60),
            "the TLS server to answer PING",
            || {
                if let Ok(Some(status)) = spawned.child.try_wait() {
                    panic!("the server exited during startup with {status}");
                }
                let mut probe: Vec<&str> = tls_args.to_vec();
                probe.push("PING");
                (cli(port, &probe).0 == "PONG").then_some(())
            },
        );
        spawned.port = port;
        spawned
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
struct Certs {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = run_with_deadline(
        Command::new("openssl").current_dir(dir).args(args),
        b"",
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_certs(dir: &Path) -> Certs {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=ringkv test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    // X.509 v3 certificates (with extensions): webpki refuses v1 ones.
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").expect("ext file");
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("ext file");
    for (name, cn, ext) in [
        ("server", "127.0.0.1", Some("server.ext")),
        ("client", "ringkv test client", Some("client.ext")),
    ] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.pem"),
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        if let Some(ext) = ext {
            args.extend(["-extfile".to_string(), ext.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        openssl(dir, &args);
    }
    Certs {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    }
}

/// Runs redis-cli against `port` with `args`; returns its trimmed stdout and stderr.
fn cli(port: u16, args: &[&str]) -> (String, String) {
    let mut cmd = Command::new(redis_cli_bin());
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args);
    let out = run_with_deadline(&mut cmd, b"", Duration::from_secs(20));
    (
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn redis_cli_talks_tls_to_the_standalone_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = make_certs(dir.path());
    let tls = ["--tls", "--cacert", path(&certs.ca)];
    let data = dir.path().join("data");
    let args: Vec<String> = [
        "--in-memory",
        "--dir",
        path(&data),
        "--tls-cert",
        path(&certs.server_cert),
        "--tls-key",
        path(&certs.server_key),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let ringkv = Spawned::start(
        ringkv_bin(),
        &args,
        |port| vec!["--port".into(), port.to_string()],
        &tls,
    );
    let port = ringkv.port;
    let with = |extra: &[&str]| -> Vec<String> {
        tls.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let run = |extra: &[&str]| {
        let args = with(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(port, &args).0
    };
    assert_eq!(run(&["SET", "secure", "yes"]), "OK");
    assert_eq!(run(&["GET", "secure"]), "yes");
    assert_eq!(run(&["PING"]), "PONG");
    // Plain text on the TLS port gets no Redis reply.
    let (out, _) = cli(port, &["PING"]);
    assert_ne!(
        out, "PONG",
        "a plain client must not be served on the TLS port"
    );
    // The server is unharmed.
    assert_eq!(run(&["GET", "secure"]), "yes");
}

#[test]
fn client_certificates_are_required_with_tls_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = make_certs(dir.path());
    let data = dir.path().join("data");
    let args: Vec<String> = [
        "--in-memory",
        "--dir",
        path(&data),
        "--tls-cert",
        path(&certs.server_cert),
        "--tls-key",
        path(&certs.server_key),
        "--tls-ca",
        path(&certs.ca),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let with_cert = [
        "--tls",
        "--cacert",
        path(&certs.ca),
        "--cert",
        path(&certs.client_cert),
        "--key",
        path(&certs.client_key),
    ];
    let ringkv = Spawned::start(
        ringkv_bin(),
        &args,
        |port| vec!["--port".into(), port.to_string()],
        &with_cert,
    );
    let port = ringkv.port;
    let (out, _) = cli(port, &["--tls", "--cacert", path(&certs.ca), "PING"]);
    assert_ne!(out, "PONG", "a client without a certificate is refused");
    let (out, err) = cli(
        port,
        &[
            "--tls",
            "--cacert",
            path(&certs.ca),
            "--cert",
            path(&certs.client_cert),
            "--key",
            path(&certs.client_key),
            "PING",
        ],
    );
    assert_eq!(out, "PONG", "with the client certificate (stderr: {err})");
}

#[test]
fn a_proxy_serves_tls_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = make_certs(dir.path());
    let cluster = Cluster::builder().nodes(1).proxies(1).shards(4).start();
    let tls = ["--tls", "--cacert", path(&certs.ca)];
    let mut args: Vec<String> = vec![
        "--etcd".into(),
        cluster.etcd_url(),
        "--cluster".into(),
        cluster.name().into(),
        "--tls-cert".into(),
        path(&certs.server_cert).into(),
        "--tls-key".into(),
        path(&certs.server_key).into(),
    ];
    // The same cluster secret as the harness's proxies.
    args.extend(cluster.proxy_args(0).iter().cloned());
    let proxy = Spawned::start(
        proxy_bin(),
        &args,
        |port| vec!["--listen".into(), format!("127.0.0.1:{port}")],
        &tls,
    );
    let port = proxy.port;
    let mut set: Vec<&str> = tls.to_vec();
    set.extend(["SET", "via-tls", "1"]);
    assert_eq!(cli(port, &set).0, "OK");
    let mut args: Vec<&str> = tls.to_vec();
    args.extend(["GET", "via-tls"]);
    assert_eq!(cli(port, &args).0, "1");
    // Written through TLS, read through the plain proxy.
    let mut plain = cluster.proxy(0);
    assert_eq!(
        plain
            .cmd(&["GET", "via-tls"])
            .as_bytes()
            .map(<[u8]>::to_vec),
        Some(b"1".to_vec())
    );
}
