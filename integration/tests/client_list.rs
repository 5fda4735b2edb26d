//! CLIENT LIST and CLIENT KILL: what an operator sees of the connected clients and how one is
//! closed, through real connections; the parsing and error replies byte for byte against a
//! real redis-server.

use std::collections::BTreeMap;
use std::time::Duration;

use ringkv_integration::{Protocol, Reply, RespClient, Server};

/// How long a killed client may take to see its connection closed.
const CLOSE_DEADLINE: Duration = Duration::from_secs(10);

/// One CLIENT LIST line's fields.
type Fields = BTreeMap<String, String>;

fn text(reply: &Reply) -> String {
    let bytes = reply
        .as_bytes()
        .unwrap_or_else(|| panic!("not a string reply: {reply:?}"));
    String::from_utf8_lossy(bytes).into_owned()
}

/// CLIENT LIST's (or INFO's) lines as field maps, in order.
fn lines(listing: &str) -> Vec<Fields> {
    listing
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            line.split(' ')
                .filter_map(|field| field.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn list(client: &mut RespClient, args: &[&str]) -> Vec<Fields> {
    let mut command = vec!["CLIENT", "LIST"];
    command.extend_from_slice(args);
    lines(&text(&client.cmd(&command)))
}

fn id_of(client: &mut RespClient) -> i64 {
    client
        .cmd(&["CLIENT", "ID"])
        .as_int()
        .expect("CLIENT ID is an integer")
}

fn field<'a>(line: &'a Fields, name: &str) -> &'a str {
    line.get(name)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
}

fn by_id(listing: &[Fields], id: i64) -> &Fields {
    listing
        .iter()
        .find(|line| field(line, "id") == id.to_string())
        .unwrap_or_else(|| panic!("client {id} not listed in {listing:?}"))
}

fn assert_closed(client: &mut RespClient, who: &str) {
    let closing = client.read_until_closed(CLOSE_DEADLINE);
    assert!(closing.closed, "{who} was not closed");
}

#[test]
fn client_list_shows_every_connection_as_it_last_ran() {
    let server = Server::ringkv(&[]);
    let mut admin = server.connect();
    let mut worker = server.connect();
    let mut resp3 = server.connect();
    let mut queueing = server.connect();
    let ids = [
        id_of(&mut admin),
        id_of(&mut worker),
        id_of(&mut resp3),
        id_of(&mut queueing),
    ];

    assert_eq!(
        worker.cmd(&["CLIENT", "SETNAME", "worker-1"]),
        Reply::Simple(b"OK".to_vec())
    );
    worker.cmd(&["GET", "some-key"]);
    resp3.set_protocol(Protocol::Resp3);
    resp3.cmd(&["HELLO", "3", "SETNAME", "three"]);
    queueing.cmd(&["MULTI"]);
    queueing.cmd(&["SET", "a", "1"]);
    queueing.cmd(&["INCR", "b"]);

    let listing = list(&mut admin, &[]);
    let listed: Vec<i64> = listing
        .iter()
        .map(|line| field(line, "id").parse().expect("numeric id"))
        .collect();
    // Ids are given as each connection's event loop starts it, which need not be the order
    // the clients connected in across loops.
    let mut sorted = ids;
    sorted.sort_unstable();
    assert_eq!(listed, sorted, "every client once, in id order");

    let me = by_id(&listing, ids[0]);
    assert_eq!(field(me, "cmd"), "client|list");
    assert_eq!(field(me, "idle"), "0");
    assert_eq!(field(me, "addr"), admin.local_addr().to_string());
    assert_eq!(field(me, "laddr"), server.addr().to_string());

    let worker_line = by_id(&listing, ids[1]);
    assert_eq!(field(worker_line, "name"), "worker-1");
    assert_eq!(field(worker_line, "cmd"), "get");
    assert_eq!(field(worker_line, "flags"), "N");
    assert_eq!(field(worker_line, "multi"), "-1");
    assert_eq!(field(worker_line, "user"), "default");
    assert_eq!(field(worker_line, "addr"), worker.local_addr().to_string());

    let three = by_id(&listing, ids[2]);
    assert_eq!((field(three, "resp"), field(three, "name")), ("3", "three"));

    // Inside MULTI: flags x, the number queued, and the last command queued.
    let queue_line = by_id(&listing, ids[3]);
    assert_eq!(field(queue_line, "flags"), "x");
    assert_eq!(field(queue_line, "multi"), "2");
    assert_eq!(field(queue_line, "cmd"), "incr");
    queueing.cmd(&["DISCARD"]);
    let queue_line = list(&mut admin, &["ID", &ids[3].to_string()]);
    assert_eq!(
        (
            field(&queue_line[0], "flags"),
            field(&queue_line[0], "multi")
        ),
        ("N", "-1")
    );
    assert_eq!(field(&queue_line[0], "cmd"), "discard");

    // ID lists the clients asked for, in the order asked; TYPE normal is everyone.
    let asked = list(
        &mut admin,
        &["ID", &ids[2].to_string(), "999999", &ids[1].to_string()],
    );
    let asked: Vec<&str> = asked.iter().map(|line| field(line, "id")).collect();
    assert_eq!(asked, [ids[2].to_string(), ids[1].to_string()]);
    assert_eq!(list(&mut admin, &["TYPE", "normal"]).len(), 4);
    assert!(list(&mut admin, &["TYPE", "pubsub"]).is_empty());

    // CLIENT INFO is the caller's own CLIENT LIST line.
    let info = lines(&text(&worker.cmd(&["CLIENT", "INFO"])));
    assert_eq!(field(&info[0], "cmd"), "client|info");
    assert_eq!(field(&info[0], "name"), "worker-1");
}

#[test]
fn client_kill_closes_the_clients_it_names() {
    let server = Server::ringkv(&[]);
    let mut admin = server.connect();
    let mut by_id_victim = server.connect();
    let mut by_addr_victim = server.connect();
    let mut old_form_victim = server.connect();
    let victim_id = id_of(&mut by_id_victim);
    let admin_id = id_of(&mut admin);

    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "ID", &victim_id.to_string()]),
        Reply::Integer(1)
    );
    assert_closed(&mut by_id_victim, "the client killed by ID");
    let listing = list(&mut admin, &[]);
    assert!(
        listing
            .iter()
            .all(|line| field(line, "id") != victim_id.to_string()),
        "a killed client is still listed: {listing:?}"
    );

    let addr = by_addr_victim.local_addr().to_string();
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "ADDR", &addr, "TYPE", "normal"]),
        Reply::Integer(1)
    );
    assert_closed(&mut by_addr_victim, "the client killed by ADDR");

    // The old form answers OK, then, with no such client left, an error.
    let addr = old_form_victim.local_addr().to_string();
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", &addr]),
        Reply::Simple(b"OK".to_vec())
    );
    assert_closed(&mut old_form_victim, "the client killed by the old form");
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", &addr]),
        Reply::Error(b"ERR No such client".to_vec())
    );

    // A client that asks to kill itself is skipped unless it says SKIPME no; then it gets
    // its reply and is closed.
    let mut bystander = server.connect();
    id_of(&mut bystander);
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "ID", &admin_id.to_string()]),
        Reply::Integer(0)
    );
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "USER", "default", "SKIPME", "no"]),
        Reply::Integer(2)
    );
    let rest = admin.read_until_closed(CLOSE_DEADLINE);
    assert!(rest.closed && rest.bytes.is_empty(), "{rest:?}");
    assert_closed(&mut bystander, "the bystander killed by USER");

    let mut after = server.connect();
    let listing = list(&mut after, &[]);
    assert_eq!(listing.len(), 1, "only the new client is left: {listing:?}");
}

/// Replies that depend on no connection's address or id, which both servers must give
/// byte for byte.
#[test]
fn client_list_and_kill_parse_and_refuse_as_redis_does() {
    let ringkv = Server::ringkv(&[]);
    let redis = Server::redis(&[]);
    let (mut ours, mut theirs) = (ringkv.connect(), redis.connect());
    let cases: &[&[&str]] = &[
        &["CLIENT", "LIST", "TYPE", "pubsub"],
        &["CLIENT", "LIST", "TYPE", "master"],
        &["CLIENT", "LIST", "TYPE", "foo"],
        &["CLIENT", "LIST", "ID", "1", "2", "abc"],
        &["CLIENT", "LIST", "ID"],
        &["CLIENT", "LIST", "foo"],
        &["CLIENT", "LIST", "ID", "0"],
        &["CLIENT", "LIST", "ID", "-5"],
        &["CLIENT", "LIST", "ID", "999999"],
        &["CLIENT", "LIST", "TYPE", "normal", "ID", "1"],
        &["CLIENT", "LIST", "ID", "1", "TYPE", "normal"],
        &["CLIENT", "KILL"],
        &["CLIENT", "KILL", "1.2.3.4:5"],
        &["CLIENT", "KILL", "id"],
        &["CLIENT", "KILL", "ID", "abc"],
        &["CLIENT", "KILL", "ID", "0"],
        &["CLIENT", "KILL", "ID", "-1"],
        &["CLIENT", "KILL", "ID", "1a"],
        &["CLIENT", "KILL", "ID", "999999"],
        &["CLIENT", "KILL", "ID", "999998", "ID", "999999"],
        &["CLIENT", "KILL", "ID", "5", "TYPE"],
        &["CLIENT", "KILL", "foo", "bar"],
        &["CLIENT", "KILL", "MAXAGE", "5"],
        &["CLIENT", "KILL", "TYPE", "foo"],
        &["CLIENT", "KILL", "TYPE", "master"],
        &["CLIENT", "KILL", "TYPE", "slave"],
        &["CLIENT", "KILL", "TYPE", "replica"],
        &["CLIENT", "KILL", "TYPE", "pubsub"],
        &["CLIENT", "KILL", "USER", "nouser"],
        &["CLIENT", "KILL", "SKIPME", "maybe"],
        &["CLIENT", "KILL", "ADDR", "1.2.3.4:5"],
        &["CLIENT", "KILL", "LADDR", "1.2.3.4:5"],
        &["CLIENT", "KILL", "SKIPME", "no", "ADDR", "1.1.1.1:1"],
    ];
    for case in cases {
        let (a, b) = (ours.cmd(case), theirs.cmd(case));
        assert_eq!(a, b, "{case:?}: ringkv answered {a:?}, redis-server {b:?}");
    }
}
