//! The proxy ↔ storage-node protocol: RESP2 over TCP, with every data request wrapped in an
//! envelope that names the shard and the map epoch the proxy routed it by:
//!
//! ```text
//! SHARD <shard> <epoch> <command> <arg>…      e.g.  SHARD 17 4 SET user:1 alice
//! SHARDS <epoch> <command> <arg>…             e.g.  SHARDS 4 MSET user:1 alice user:2 bob
//! ```
//!
//! The node runs the command only if it serves `shard` in its own map and its map is not older
//! than the proxy's. `SHARDS` carries a multi-key command (MGET, MSET, DEL, EXISTS, UNLINK,
//! TOUCH) whose keys lie in several shards that the proxy routed to this one node: the node
//! runs it only if it serves every key's shard, and refuses it whole otherwise, before
//! running any of it. A refused request is refused with a typed error the proxy acts on, and
//! which a client never sees:
//!
//! - `-MOVED <shard> <epoch>`: this node does not serve the shard in its map of `<epoch>`.
//!   The proxy's map is older (or equally stale); it waits for a map of at least that epoch
//!   and routes again.
//! - `-STALE <epoch>`: the proxy's map is newer than the node's (`<epoch>`); the node is
//!   catching up with etcd, so the proxy retries shortly.
//!
//! Before anything else, a connection presents the cluster secret: `AUTH <secret>`. A node
//! with a secret answers anything else with `-NOAUTH …` and closes the connection, and a wrong
//! secret with `-WRONGPASS …` (then closes), so nobody but the cluster's proxies reaches data.
//! The secret comes from `--secret-file`, or else from the cluster config in etcd, where
//! `ringkv-admin init` puts a random one ([`cluster_secret`]).
//!
//! Both sides use this module, so the words and their parsing exist once.

use std::path::Path;

use bytes::Bytes;

use crate::resp::request::parse_i64;
use crate::resp::Reply;

/// The envelope's command name.
pub const SHARD: &[u8] = b"SHARD";

/// The envelope of a command whose keys are in several shards of one node.
pub const SHARDS: &[u8] = b"SHARDS";

/// The command a connection presents the cluster secret with.
pub const AUTH: &[u8] = b"AUTH";

/// A node's answer to a connection that did not present the secret first.
pub const NOAUTH_NODE: Reply = Reply::error(
    "NOAUTH this is a ringkv storage node: present the cluster secret with AUTH first",
);

/// A node's answer to a wrong secret.
pub const WRONG_SECRET: Reply = Reply::error("WRONGPASS wrong cluster secret");

/// Shortest secret accepted from a file: anything shorter is guessable.
pub const MIN_SECRET_LEN: usize = 16;

/// The cluster secret: the trimmed contents of `file` if given, else the config's (`None`
/// when neither has one). The error says what is wrong with the file.
pub fn cluster_secret(file: Option<&Path>, from_config: &str) -> Result<Option<Bytes>, String> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the secret file: {e}"))?;
        let secret = text.trim();
        if secret.len() < MIN_SECRET_LEN {
            return Err(format!(
                "the secret must be at least {MIN_SECRET_LEN} characters, not {}",
                secret.len()
            ));
        }
        if secret
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err("the secret cannot hold spaces or control characters".into());
        }
        return Ok(Some(Bytes::copy_from_slice(secret.as_bytes())));
    }
    Ok((!from_config.is_empty()).then(|| Bytes::copy_from_slice(from_config.as_bytes())))
}

/// Compares a presented secret with the expected one in time that does not depend on where
/// they differ.
pub fn secret_matches(given: &[u8], expected: &[u8]) -> bool {
    if given.len() != expected.len() {
        return false;
    }
    given
        .iter()
        .zip(expected)
        .fold(0u8, |diff, (a, b)| diff | (a ^ b))
        == 0
}

/// A node's refusal to run a request, as the proxy decodes it from the error reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The node does not serve `shard` at its map `epoch`.
    Moved {
        /// The shard asked for.
        shard: u32,
        /// The node's map epoch.
        epoch: u64,
    },
    /// The node's map (`epoch`) is older than the one the request was routed by.
    Stale {
        /// The node's map epoch.
        epoch: u64,
    },
}

impl Refusal {
    /// The error reply that carries the refusal.
    pub fn reply(self) -> Reply {
        match self {
            Refusal::Moved { shard, epoch } => Reply::error_owned(format!("MOVED {shard} {epoch}")),
            Refusal::Stale { epoch } => Reply::error_owned(format!("STALE {epoch}")),
        }
    }

    /// Reads a refusal back from an error reply's text; `None` for any other error.
    pub fn parse(error: &[u8]) -> Option<Refusal> {
        let mut words = error.split(|&b| b == b' ');
        let code = words.next()?;
        let number = |word: Option<&[u8]>| -> Option<u64> {
            parse_i64(word?).and_then(|n| u64::try_from(n).ok())
        };
        let refusal = match code {
            b"MOVED" => Refusal::Moved {
                shard: u32::try_from(number(words.next())?).ok()?,
                epoch: number(words.next())?,
            },
            b"STALE" => Refusal::Stale {
                epoch: number(words.next())?,
            },
            _ => return None,
        };
        words.next().is_none().then_some(refusal)
    }
}

/// A request's envelope, as the node reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    /// The shard the request's keys hash to (or the one shard a walk covers).
    pub shard: u32,
    /// The epoch of the map the proxy routed by.
    pub epoch: u64,
}

/// Splits `SHARD <shard> <epoch> <command…>` into its envelope and the command's arguments.
/// The error reply names what is wrong; `args[0]` must already be `SHARD`.
pub fn open_envelope(args: &[Bytes]) -> Result<(Envelope, &[Bytes]), Reply> {
    if args.len() < 4 {
        return Err(Reply::error(
            "ERR wrong number of arguments for 'shard' command",
        ));
    }
    let shard = parse_i64(&args[1])
        .and_then(|n| u32::try_from(n).ok())
        .ok_or(Reply::error("ERR invalid shard id"))?;
    let epoch = parse_epoch(&args[2])?;
    Ok((Envelope { shard, epoch }, &args[3..]))
}

/// Splits `SHARDS <epoch> <command…>` into the epoch and the command's arguments. The error
/// reply names what is wrong; `args[0]` must already be `SHARDS`.
pub fn open_shards_envelope(args: &[Bytes]) -> Result<(u64, &[Bytes]), Reply> {
    if args.len() < 3 {
        return Err(Reply::error(
            "ERR wrong number of arguments for 'shards' command",
        ));
    }
    Ok((parse_epoch(&args[1])?, &args[2..]))
}

/// An envelope's map epoch.
fn parse_epoch(arg: &[u8]) -> Result<u64, Reply> {
    parse_i64(arg)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or(Reply::error("ERR invalid map epoch"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn error_text(reply: Reply) -> Vec<u8> {
        match reply {
            Reply::Error(text) => text.to_vec(),
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn a_shards_envelope_opens_into_its_epoch_and_command() {
        let args = words(&["SHARDS", "4", "MGET", "a", "b"]);
        let (epoch, inner) = open_shards_envelope(&args).expect("a valid envelope");
        assert_eq!(epoch, 4);
        assert_eq!(inner, &args[2..]);
        let bad = words(&["SHARDS", "-1", "MGET", "a"]);
        assert_eq!(
            error_text(open_shards_envelope(&bad).unwrap_err()),
            b"ERR invalid map epoch"
        );
        assert_eq!(
            error_text(open_shards_envelope(&args[..2]).unwrap_err()),
            b"ERR wrong number of arguments for 'shards' command"
        );
    }

    #[test]
    fn refusals_round_trip_through_their_replies() {
        for refusal in [
            Refusal::Moved {
                shard: 17,
                epoch: 4,
            },
            Refusal::Stale { epoch: 0 },
            Refusal::Moved {
                shard: u32::MAX,
                epoch: u64::MAX >> 1,
            },
        ] {
            let text = error_text(refusal.reply());
            assert_eq!(Refusal::parse(&text), Some(refusal));
        }
        assert_eq!(
            error_text(Refusal::Moved { shard: 3, epoch: 9 }.reply()),
            b"MOVED 3 9"
        );
    }

    #[test]
    fn other_errors_are_not_refusals() {
        for text in [
            &b"ERR syntax error"[..],
            b"MOVED",
            b"MOVED 1",
            b"MOVED 1 2 3",
            b"MOVED x 2",
            b"STALE -1",
            b"MOVEDX 1 2",
        ] {
            assert_eq!(
                Refusal::parse(text),
                None,
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn secrets_come_from_the_file_first_and_compare_whole() {
        let dir = std::env::temp_dir().join(format!("ringkv-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("secret");
        std::fs::write(&file, "0123456789abcdef0123\n").expect("write");
        assert_eq!(
            cluster_secret(Some(&file), "from-etcd").expect("valid"),
            Some(Bytes::from_static(b"0123456789abcdef0123"))
        );
        assert_eq!(
            cluster_secret(None, "from-etcd").expect("valid"),
            Some(Bytes::from_static(b"from-etcd"))
        );
        assert_eq!(cluster_secret(None, "").expect("valid"), None);
        std::fs::write(&file, "short").expect("write");
        assert!(cluster_secret(Some(&file), "").is_err());
        assert!(cluster_secret(Some(&dir.join("missing")), "").is_err());
        let _ = std::fs::remove_dir_all(&dir);
        assert!(secret_matches(b"abc", b"abc"));
        assert!(!secret_matches(b"abd", b"abc"));
        assert!(!secret_matches(b"ab", b"abc"));
    }

    #[test]
    fn envelopes_name_shard_epoch_and_command() {
        let args = words(&["SHARD", "17", "4", "GET", "k"]);
        let (envelope, rest) = open_envelope(&args).expect("valid envelope");
        assert_eq!(
            envelope,
            Envelope {
                shard: 17,
                epoch: 4
            }
        );
        assert_eq!(rest, &args[3..]);
        assert!(open_envelope(&args[..3]).is_err());
        let mut bad = args.clone();
        bad[1] = Bytes::from_static(b"-1");
        assert!(open_envelope(&bad).is_err());
    }
}
