//! The stock Redis tools work against ringkv: `redis-cli` (arguments and stdin, raw and
//! formatted output, `--scan`, `--bigkeys`, `--memkeys`, COMMAND GETKEYS and LIST) prints what
//! it prints for redis-server, and `redis-benchmark` finishes every test without an error
//! reply. Also ringkv's own command line: `--help` lists every flag, and a bad flag value
//! exits with status 2 and one line naming the flag.

use std::process::{Command, Output};
use std::time::Duration;

use ringkv_integration::{
    free_port, redis_benchmark_bin, redis_cli_bin, ringkv_bin, run_with_deadline, write_file,
    Server,
};

const TOOL_DEADLINE: Duration = Duration::from_secs(60);
const BENCHMARK_DEADLINE: Duration = Duration::from_secs(600);

fn cli(server: &Server, extra: &[&str], args: &[&str], stdin: &[u8]) -> Output {
    let mut cmd = Command::new(redis_cli_bin());
    cmd.arg("-h")
        .arg("127.0.0.1")
        .arg("-p")
        .arg(server.port().to_string())
        .args(extra)
        .args(args);
    run_with_deadline(&mut cmd, stdin, TOOL_DEADLINE)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs the same redis-cli invocation against both servers; returns ringkv's stdout after
/// checking it equals redis-server's.
fn cli_same(
    ringkv: &Server,
    redis: &Server,
    extra: &[&str],
    args: &[&str],
    stdin: &[u8],
) -> String {
    let expected = cli(redis, extra, args, stdin);
    let actual = cli(ringkv, extra, args, stdin);
    assert!(
        expected.status.success(),
        "redis-cli {args:?} against redis-server failed: {}",
        text(&expected.stderr)
    );
    assert!(
        actual.status.success(),
        "redis-cli {extra:?} {args:?} against ringkv exited with {}: {}",
        actual.status,
        text(&actual.stderr)
    );
    assert_eq!(
        text(&actual.stdout),
        text(&expected.stdout),
        "redis-cli {extra:?} {args:?} prints differently for ringkv (left) and redis-server (right)"
    );
    text(&actual.stdout)
}

#[test]
fn redis_cli_one_shot_commands_print_like_redis() {
    let ringkv = Server::ringkv(&[]);
    let redis = Server::redis(&[]);
    let raw: &[&str] = &[];
    let formatted: &[&str] = &["--no-raw"];
    let cases: &[(&[&str], &[&str], &str)] = &[
        (raw, &["SET", "greeting", "hello world"], "OK\n"),
        (raw, &["GET", "greeting"], "hello world\n"),
        (formatted, &["GET", "greeting"], "\"hello world\"\n"),
        (formatted, &["INCR", "visits"], "(integer) 1\n"),
        (raw, &["INCR", "visits"], "2\n"),
        (formatted, &["GET", "missing"], "(nil)\n"),
        (raw, &["GET", "missing"], "\n"),
        (
            formatted,
            &["MGET", "greeting", "missing", "visits"],
            "1) \"hello world\"\n2) (nil)\n3) \"2\"\n",
        ),
        (
            formatted,
            &["EXISTS", "greeting", "missing"],
            "(integer) 1\n",
        ),
        (formatted, &["TTL", "greeting"], "(integer) -1\n"),
        (formatted, &["TYPE", "greeting"], "string\n"),
        (formatted, &["DEL", "visits"], "(integer) 1\n"),
        (formatted, &["KEYS", "nothing*"], "(empty array)\n"),
        (
            formatted,
            &["NOPE"],
            "(error) ERR unknown command 'NOPE', with args beginning with: \n",
        ),
        (
            formatted,
            &["GET"],
            "(error) ERR wrong number of arguments for 'get' command\n",
        ),
        (formatted, &["PING"], "PONG\n"),
        (formatted, &["ECHO", "tab\there"], "\"tab\\there\"\n"),
        (formatted, &["DBSIZE"], "(integer) 1\n"),
    ];
    for (extra, args, expected) in cases {
        let out = cli_same(&ringkv, &redis, extra, args, b"");
        assert_eq!(out, *expected, "redis-cli {extra:?} {args:?}");
    }
}

#[test]
fn redis_cli_reads_commands_from_stdin() {
    let ringkv = Server::ringkv(&[]);
    let redis = Server::redis(&[]);
    let script = b"SET a 1\nGET a\nINCR a\nAPPEND a xyz\nGET a\nDEL a\nGET a\nSET \"with space\" \"v v\"\nGET \"with space\"\n";
    let raw = cli_same(&ringkv, &redis, &[], &[], script);
    assert_eq!(raw, "OK\n1\n2\n4\n2xyz\n1\n\nOK\nv v\n");
    let formatted = cli_same(&ringkv, &redis, &["--no-raw"], &[], script);
    assert_eq!(
        formatted,
        "OK\n\"1\"\n(integer) 2\n(integer) 4\n\"2xyz\"\n(integer) 1\n(nil)\nOK\n\"v v\"\n"
    );
}

#[test]
fn redis_cli_scan_lists_every_matching_key() {
    let ringkv = Server::ringkv(&[]);
    let mut client = ringkv.connect();
    for i in 0..300 {
        client.cmd(&["SET", &format!("user:{i}"), "x"]);
        client.cmd(&["SET", &format!("order:{i}"), "y"]);
    }
    let out = cli(&ringkv, &["--scan", "--pattern", "user:*"], &[], b"");
    assert!(
        out.status.success(),
        "redis-cli --scan: {}",
        text(&out.stderr)
    );
    let mut keys: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    keys.sort();
    keys.dedup();
    let mut expected: Vec<String> = (0..300).map(|i| format!("user:{i}")).collect();
    expected.sort();
    assert_eq!(keys, expected, "redis-cli --scan --pattern user:*");
}

/// COMMAND GETKEYS prints what redis-server prints, errors included, and COMMAND LIST's
/// filters list the same names for families ringkv serves whole (its order is Redis's hash
/// order, so the names are compared sorted).
#[test]
fn redis_cli_command_getkeys_and_list_answer_as_redis() {
    let ringkv = Server::ringkv(&[]);
    let redis = Server::redis(&[]);
    let full_commands: &[&[&str]] = &[
        &["GET", "a"],
        &["mset", "a", "1", "b", "2"],
        &["BITOP", "AND", "dest", "a", "b"],
        &["COPY", "a", "b", "DB", "0"],
        &["OBJECT", "ENCODING", "k"],
        &["SET", "a", "b", "EX"],
        &["PING", "x"],
        &["CLIENT", "SETNAME", "x"],
        &["GET", "a", "b"],
        &["MSET", "a"],
        &["NOSUCH", "a"],
        &["OBJECT", "NOSUCH", "k"],
        &["GET"],
    ];
    for command in full_commands {
        let args: Vec<&str> = ["COMMAND", "GETKEYS"]
            .iter()
            .chain(command.iter())
            .copied()
            .collect();
        cli_same(&ringkv, &redis, &[], &args, b"");
    }
    for filter in [
        &["PATTERN", "get*"][..],
        &["ACLCAT", "bitmap"],
        &["MODULE", "x"],
    ] {
        let args: Vec<&str> = ["COMMAND", "LIST", "FILTERBY"]
            .iter()
            .chain(filter.iter())
            .copied()
            .collect();
        let sorted = |server: &Server| {
            let mut names: Vec<String> = text(&cli(server, &[], &args, b"").stdout)
                .lines()
                .map(String::from)
                .collect();
            names.sort();
            names
        };
        assert_eq!(
            sorted(&ringkv),
            sorted(&redis),
            "COMMAND LIST FILTERBY {filter:?}"
        );
    }
}

/// `redis-cli --bigkeys` and `--memkeys` (SCAN, TYPE, STRLEN, MEMORY USAGE) find the largest
/// key, and `--memkeys` sizes every key: MEMORY USAGE answers for each.
#[test]
fn redis_cli_bigkeys_and_memkeys_find_the_largest_key() {
    let ringkv = Server::ringkv(&[]);
    let mut client = ringkv.connect();
    for i in 1..=20 {
        client.cmd(&["SET", &format!("key{i}"), &"x".repeat(i * 10)]);
    }
    let scan = |flag: &str| {
        let out = cli(&ringkv, &[flag], &[], b"");
        assert!(
            out.status.success(),
            "redis-cli {flag}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    let big_out = scan("--bigkeys");
    assert!(
        big_out.contains("Biggest string found '\"key20\"' has 200 bytes"),
        "redis-cli --bigkeys:\n{big_out}"
    );
    let mem_out = scan("--memkeys");
    assert!(
        mem_out.contains("Biggest string found '\"key20\"'"),
        "redis-cli --memkeys:\n{mem_out}"
    );
    // Every key is counted with at least its value's bytes (2,100 in all).
    let total: u64 = mem_out
        .lines()
        .find_map(|line| {
            line.strip_prefix("20 strings with ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no string total in redis-cli --memkeys:\n{mem_out}"));
    assert!(
        total > 2_100,
        "redis-cli --memkeys sized the strings at {total} bytes"
    );
}

/// Lines of redis-benchmark output that signal a failed request.
fn error_lines(output: &Output) -> Vec<String> {
    let all = format!("{}\n{}", text(&output.stdout), text(&output.stderr));
    all.lines()
        .filter(|l| {
            let lower = l.to_lowercase();
            lower.contains("error") || l.contains("ERR") || lower.contains("could not connect")
        })
        .map(String::from)
        .collect()
}

/// Parses `--csv` output into (test name, requests per second).
fn csv_rates(output: &Output) -> Vec<(String, f64)> {
    text(&output.stdout)
        .lines()
        .skip_while(|l| !l.starts_with("\"test\""))
        .skip(1)
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(',').map(|f| f.trim_matches('"')).collect();
            Some((fields.first()?.to_string(), fields.get(1)?.parse().ok()?))
        })
        .collect()
}

fn benchmark(server: &Server, args: &[&str]) -> Output {
    let mut cmd = Command::new(redis_benchmark_bin());
    cmd.arg("-h")
        .arg("127.0.0.1")
        .arg("-p")
        .arg(server.port().to_string())
        .args(args)
        .arg("--csv");
    run_with_deadline(&mut cmd, b"", BENCHMARK_DEADLINE)
}

fn assert_benchmark_clean(output: &Output, tests: &[&str], what: &str) {
    assert!(
        output.status.success(),
        "{what}: redis-benchmark exited with {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    let errors = error_lines(output);
    assert!(
        errors.is_empty(),
        "{what}: redis-benchmark reported errors: {errors:#?}"
    );
    let rates = csv_rates(output);
    for test in tests {
        let rate = rates.iter().find(|(name, _)| name == test).map(|(_, r)| *r);
        assert!(
            rate.is_some_and(|r| r > 0.0),
            "{what}: no positive rate for {test} in {rates:?}\nstdout:\n{}",
            text(&output.stdout)
        );
    }
}

#[test]
fn redis_benchmark_set_get_incr_mset_finish_without_errors() {
    let ringkv = Server::ringkv(&[]);
    let output = benchmark(
        &ringkv,
        &["-t", "set,get,incr,mset", "-n", "20000", "-r", "10000"],
    );
    assert_benchmark_clean(&output, &["SET", "GET", "INCR", "MSET (10 keys)"], "plain");
    let mut client = ringkv.connect();
    assert!(
        client.cmd(&["DBSIZE"]).as_int().is_some_and(|n| n > 0),
        "redis-benchmark wrote no keys"
    );
}

#[test]
fn redis_benchmark_pipelined_requests_finish_without_errors() {
    let ringkv = Server::ringkv(&[]);
    let output = benchmark(
        &ringkv,
        &[
            "-t", "set,get", "-n", "20000", "-P", "16", "-c", "20", "-d", "100",
        ],
    );
    assert_benchmark_clean(&output, &["SET", "GET"], "pipelined -P 16");
}

// --- ringkv's own command line ------------------------------------------------------------

#[test]
fn help_lists_every_flag() {
    let mut cmd = Command::new(ringkv_bin());
    cmd.arg("--help");
    let output = run_with_deadline(&mut cmd, b"", TOOL_DEADLINE);
    assert!(
        output.status.success(),
        "ringkv --help exited with {}",
        output.status
    );
    let help = text(&output.stdout);
    for flag in [
        "--bind",
        "--port",
        "--dir",
        "--shards",
        "--in-memory",
        "--fsync",
        "--event-loops",
    ] {
        assert!(
            help.contains(flag),
            "ringkv --help does not mention {flag}:\n{help}"
        );
    }
}

/// Runs ringkv with `args` (plus a free port and a temporary --dir unless the case sets them)
/// and asserts it refuses to start: exit status 2, one line on stderr naming `flag`.
fn assert_rejected(args: &[&str], flag: &str) {
    let dir = tempfile::tempdir().expect("temporary --dir");
    let mut cmd = Command::new(ringkv_bin());
    cmd.arg("--bind").arg("127.0.0.1");
    if !args.contains(&"--port") {
        cmd.arg("--port").arg(free_port().to_string());
    }
    if !args.contains(&"--dir") {
        cmd.arg("--dir").arg(dir.path());
    }
    cmd.args(args);
    // A server that accepts the bad value keeps running; the deadline turns that into a failure.
    let output = run_with_deadline(&mut cmd, b"", Duration::from_secs(30));
    let stderr = text(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(2),
        "ringkv {args:?} should exit with status 2, got {}; stderr: {stderr}",
        output.status
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "ringkv {args:?} should print one line on stderr, printed:\n{stderr}"
    );
    assert!(
        lines[0].contains(flag),
        "ringkv {args:?}: the stderr line does not name {flag}: {stderr}"
    );
}

#[test]
fn non_numeric_shards_is_rejected_naming_the_flag() {
    assert_rejected(&["--shards", "abc"], "--shards");
}

#[test]
fn unknown_fsync_policy_is_rejected_naming_the_flag() {
    assert_rejected(&["--fsync", "sometimes"], "--fsync");
}

#[test]
fn out_of_range_port_is_rejected_naming_the_flag() {
    assert_rejected(&["--port", "99999"], "--port");
}

#[test]
fn dir_under_a_regular_file_is_rejected_naming_the_flag() {
    let scratch = tempfile::tempdir().expect("scratch dir");
    let file = scratch.path().join("not-a-directory");
    write_file(&file, b"plain file");
    let dir = file.join("data");
    let dir = dir.to_str().expect("temp paths are UTF-8");
    assert_rejected(&["--dir", dir], "--dir");
}

#[test]
fn zero_event_loops_is_rejected_naming_the_flag() {
    assert_rejected(&["--event-loops", "0"], "--event-loops");
}

#[test]
fn event_loops_flag_sets_the_servers_loop_threads() {
    let server = Server::ringkv(&["--event-loops", "3"]);
    let pid = server.pid().expect("ringkv is running");
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the server's threads");
    let loops = tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("ringkv-loop-"))
        .count();
    assert_eq!(loops, 3, "event-loop threads (ringkv-loop-N)");
    let mut client = server.connect();
    assert_eq!(
        client.cmd(&["SET", "k", "v"]),
        ringkv_integration::Reply::Simple(b"OK".to_vec())
    );
}
