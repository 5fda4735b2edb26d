//! SLOWLOG and its two CONFIG parameters against a real redis-server: with every command
//! logged (`slowlog-log-slower-than 0`), both servers must log the same commands with the same
//! (shortened, redacted) arguments and client names, and answer the same errors.

use ringkv_integration::{Reply, RespClient, Server};

fn ok() -> Reply {
    Reply::Simple(b"OK".to_vec())
}

/// Each entry's arguments and client name: what both servers must agree on (ids, times,
/// durations and client ports differ).
fn entries(client: &mut RespClient, count: &str) -> Vec<(Vec<Reply>, Reply)> {
    let reply = client.cmd(&["SLOWLOG", "GET", count]);
    let entries = reply.as_array().expect("SLOWLOG GET is an array");
    entries
        .iter()
        .map(|entry| {
            let fields = entry.as_array().expect("an entry is an array");
            assert_eq!(fields.len(), 6, "{fields:?}");
            for number in &fields[..3] {
                assert!(number.as_int().is_some(), "{fields:?}");
            }
            let peer = fields[4].as_bytes().expect("the client's address");
            assert!(
                String::from_utf8_lossy(peer).starts_with("127.0.0.1:"),
                "{fields:?}"
            );
            let args = fields[3].as_array().expect("the arguments").to_vec();
            (args, fields[5].clone())
        })
        .collect()
}

/// CONFIG GET slowlog* as sorted pairs (Redis lists parameters in its hash table's order).
fn settings(client: &mut RespClient) -> Vec<(String, String)> {
    let reply = client.cmd(&["CONFIG", "GET", "slowlog*"]);
    let flat = reply.as_array().expect("CONFIG GET is an array in RESP2");
    let text = |r: &Reply| String::from_utf8_lossy(r.as_bytes().expect("a bulk")).into_owned();
    let mut pairs: Vec<(String, String)> = flat
        .chunks(2)
        .map(|pair| (text(&pair[0]), text(&pair[1])))
        .collect();
    pairs.sort();
    pairs
}

/// The commands both servers log, as a client would send them (lower-case names: ringkv logs
/// a pipeline's gathered writes under the table's name).
fn workload() -> Vec<Vec<String>> {
    let owned = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
    let mut del = vec!["del".to_string()];
    del.extend((0..40).map(|i| format!("key:{i}")));
    vec![
        owned(&["set", "k", "v"]),
        owned(&["set", "long", &"a".repeat(200)]),
        owned(&["client", "setname", "logged"]),
        owned(&["get", "k"]),
        owned(&["incr", "counter"]),
        owned(&["mget", "k", "long", "missing"]),
        owned(&["auth", "not-the-password"]),
        owned(&["hello", "2", "auth", "default", "secret"]),
        del,
    ]
}

#[test]
fn slowlog_logs_what_redis_logs() {
    let ringkv = Server::ringkv(&[]);
    let redis = Server::redis(&[]);
    let mut logged = Vec::new();
    for server in [&ringkv, &redis] {
        let mut c = server.connect();
        assert_eq!(c.cmd(&["SLOWLOG", "LEN"]), Reply::Integer(0), "a fresh log");
        assert_eq!(
            c.cmd(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]),
            ok()
        );
        assert_eq!(c.cmd(&["SLOWLOG", "RESET"]), ok());
        for command in workload() {
            let words: Vec<&str> = command.iter().map(String::as_str).collect();
            c.cmd(&words);
        }
        let all = entries(&mut c, "-1");
        // The newest two: the SLOWLOG GET just run, and the last of the workload.
        let newest_two = entries(&mut c, "2");
        assert_eq!(newest_two[1], all[0]);
        let len = c.cmd(&["SLOWLOG", "LEN"]);
        assert_eq!(c.cmd(&["CONFIG", "SET", "slowlog-max-len", "3"]), ok());
        let kept = c.cmd(&["SLOWLOG", "LEN"]);
        assert_eq!(
            c.cmd(&["CONFIG", "SET", "slowlog-log-slower-than", "-1"]),
            ok()
        );
        c.cmd(&["GET", "k"]);
        let off = entries(&mut c, "1");
        let settings = settings(&mut c);
        logged.push((all, newest_two, len, kept, off, settings));
    }
    let (ours, theirs) = (&logged[0], &logged[1]);
    assert_eq!(
        ours.0.len(),
        workload().len() + 1,
        "every command of the workload and the SLOWLOG RESET before it: {:#?}",
        ours.0
    );
    assert_eq!(
        ours.0.len(),
        theirs.0.len(),
        "{:#?}\n{:#?}",
        ours.0,
        theirs.0
    );
    for (i, (a, b)) in ours.0.iter().zip(&theirs.0).enumerate() {
        assert_eq!(a, b, "entry {i}");
    }
    assert_eq!(ours.1, theirs.1, "SLOWLOG GET 2");
    assert_eq!(ours.2, theirs.2, "SLOWLOG LEN");
    assert_eq!(ours.3, theirs.3, "SLOWLOG LEN after slowlog-max-len 3");
    assert_eq!(ours.4, theirs.4, "the newest entry once logging is off");
    assert_eq!(ours.5, theirs.5, "CONFIG GET slowlog*");
    assert_eq!(
        ours.5,
        [
            ("slowlog-log-slower-than".to_string(), "-1".to_string()),
            ("slowlog-max-len".to_string(), "3".to_string())
        ]
    );
}

#[test]
fn slowlog_refuses_as_redis_does() {
    let ringkv = Server::ringkv(&[]);
    let redis = Server::redis(&[]);
    let (mut ours, mut theirs) = (ringkv.connect(), redis.connect());
    let cases: &[&[&str]] = &[
        &["SLOWLOG", "GET", "abc"],
        &["SLOWLOG", "GET", "-2"],
        &["SLOWLOG", "GET", "1.5"],
        &["SLOWLOG", "GET", "+1"],
        &["SLOWLOG", "GET", "0"],
        &["SLOWLOG", "GET", "5", "6"],
        &["slowlog", "Get", "5", "6"],
        &["SLOWLOG", "LEN", "x"],
        &["SLOWLOG", "RESET", "x"],
        &["SLOWLOG", "foo"],
        &["SLOWLOG"],
        &["SLOWLOG", "HELP"],
        &["CONFIG", "SET", "slowlog-log-slower-than", "abc"],
        &["CONFIG", "SET", "slowlog-log-slower-than", "-5"],
        &["CONFIG", "SET", "slowlog-max-len", "-1"],
        &[
            "CONFIG",
            "SET",
            "slowlog-max-len",
            "5",
            "slowlog-max-len",
            "6",
        ],
        &["CONFIG", "GET", "slowlog-max-len"],
    ];
    for case in cases {
        let (a, b) = (ours.cmd(case), theirs.cmd(case));
        assert_eq!(a, b, "{case:?}");
    }
}
