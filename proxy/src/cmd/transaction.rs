//! MULTI, EXEC, DISCARD, WATCH and UNWATCH, as Redis answers them. The connection queues the
//! commands between MULTI and EXEC (see `Connection::queue`); EXEC sends the data commands
//! to the engine as one transaction (`Backend::exec`) and runs the ones the connection
//! answers itself (PING, INFO, CLIENT…) after it, each reply in its queued place.

use std::time::Instant;

use bytes::Bytes;
use ringkv_common::command::{Cmd, CommandSpec, Route};
use ringkv_common::resp::Reply;
use ringkv_common::transaction::{
    Queued, DISCARD_WITHOUT_MULTI, EXECABORT, EXEC_WITHOUT_MULTI, NESTED_MULTI, WATCH_INSIDE_MULTI,
};
use ringkv_storage::Executed;

use crate::context::ServerContext;
use crate::session::{Session, Transaction};

/// Whether Redis runs `cmd` at once inside MULTI rather than queueing it.
pub fn runs_at_once(cmd: Cmd) -> bool {
    matches!(
        cmd,
        Cmd::Exec | Cmd::Discard | Cmd::Multi | Cmd::Watch | Cmd::Quit | Cmd::Reset
    )
}

/// A request refused before it ran (unknown, wrong arity, not permitted), as a transaction
/// sees it, as in Redis: a refused EXEC ends the transaction and answers EXECABORT naming
/// why; any other refusal inside MULTI makes EXEC answer EXECABORT.
pub fn refused(session: &mut Session, spec: Option<&CommandSpec>, reply: Reply) -> Reply {
    if spec.is_some_and(|spec| spec.cmd == Cmd::Exec) {
        if session.transaction.take().is_some() {
            session.publish();
        }
        session.watched.clear();
        let Reply::Error(text) = &reply else {
            return reply;
        };
        // Redis words it from the error without its generic ERR code.
        let why = text.strip_prefix(b"ERR ").unwrap_or(text);
        return Reply::error_owned(format!(
            "EXECABORT Transaction discarded because of: {}",
            String::from_utf8_lossy(why)
        ));
    }
    if let Some(transaction) = session.transaction.as_mut() {
        transaction.fail();
    }
    reply
}

/// MULTI: start queueing.
pub fn multi(session: &mut Session) -> Reply {
    if session.transaction.is_some() {
        return NESTED_MULTI;
    }
    session.transaction = Some(Transaction::default());
    Reply::Ok
}

/// DISCARD: drop the queued commands and forget the watched keys.
pub fn discard(session: &mut Session) -> Reply {
    if session.transaction.take().is_none() {
        return DISCARD_WITHOUT_MULTI;
    }
    session.watched.clear();
    Reply::Ok
}

/// UNWATCH: forget the watched keys.
pub fn unwatch(session: &mut Session) -> Reply {
    session.watched.clear();
    Reply::Ok
}

/// WATCH: note what each key holds now. A key watched already keeps what was seen first, so
/// a change since then still aborts EXEC, as in Redis.
pub async fn watch(keys: &[Bytes], session: &mut Session, ctx: &ServerContext) -> Reply {
    if session.transaction.is_some() {
        return WATCH_INSIDE_MULTI;
    }
    for key in keys {
        if session.watched.iter().any(|(watched, _)| watched == key) {
            continue;
        }
        match ctx.backend.watch(key).await {
            // Copied: the key must not pin the connection's read buffer.
            Ok(seen) => session.watched.push((Bytes::copy_from_slice(key), seen)),
            Err(reply) => return reply,
        }
    }
    Reply::Ok
}

/// Queued commands with their places in the transaction.
type Numbered = Vec<(usize, Queued)>;

/// What EXEC answered, and what ran inside it for the server's counts.
pub struct Exec {
    /// The reply: the commands' replies, nil when a watched key changed, or an error.
    pub reply: Reply,
    /// Commands run inside it (each counts in `total_commands_processed`, as in Redis).
    pub commands: u64,
    /// Error replies among theirs (each counts in `total_error_replies`).
    pub errors: u64,
}

/// EXEC: run the queued commands, unless one failed to queue (EXECABORT) or a watched key
/// changed (nil). Either way the transaction ends and no key stays watched.
pub async fn exec(session: &mut Session, ctx: &ServerContext) -> Exec {
    let answer = |reply| Exec {
        reply,
        commands: 0,
        errors: 0,
    };
    let Some(transaction) = session.transaction.take() else {
        return answer(EXEC_WITHOUT_MULTI);
    };
    let watched = std::mem::take(&mut session.watched);
    if transaction.failed {
        return answer(EXECABORT);
    }
    let count = transaction.queued.len();
    let (local, data): (Numbered, Numbered) = transaction
        .queued
        .into_iter()
        .enumerate()
        .partition(|(_, q)| q.spec.route == Route::Local);
    let data_specs: Vec<_> = data.iter().map(|(_, q)| q.spec).collect();
    let started = Instant::now();
    let ran = if data.is_empty() && watched.is_empty() {
        Ok(Executed::Ran(Vec::new()))
    } else {
        let data = data.into_iter().map(|(_, q)| q).collect();
        ctx.backend.exec(watched, data).await
    };
    let data_replies = match ran {
        Ok(Executed::Ran(replies)) => replies,
        Ok(Executed::Aborted) => return answer(Reply::NilArray),
        Err(reply) => return answer(reply),
    };
    // The engine ran them as one step: each is counted with its share of the time.
    let each = started.elapsed() / u32::try_from(data_specs.len().max(1)).unwrap_or(u32::MAX);
    for (spec, reply) in data_specs.iter().zip(&data_replies) {
        ctx.stats.record_command(spec, reply.is_error(), each);
    }
    let mut data_replies = data_replies.into_iter();
    let mut local = local.into_iter().peekable();
    let mut replies = Vec::with_capacity(count);
    for at in 0..count {
        let reply = match local.next_if(|(queued_at, _)| *queued_at == at) {
            Some((_, q)) => run_local(&q, session, ctx).await,
            None => data_replies.next().unwrap_or(Reply::error(
                "ERR the engine answered fewer replies than the transaction has commands",
            )),
        };
        replies.push(reply);
    }
    let mut errors = 0;
    for reply in replies.iter().filter(|reply| reply.is_error()) {
        ctx.stats.commands.error(reply);
        errors += 1;
    }
    Exec {
        reply: Reply::Array(replies),
        commands: count as u64,
        errors,
    }
}

/// Runs one queued command the connection answers itself, counted as it would be alone.
async fn run_local(q: &Queued, session: &mut Session, ctx: &ServerContext) -> Reply {
    let started = Instant::now();
    let reply = super::run(q.spec, &q.args, session, ctx).await;
    ctx.stats
        .record_command(q.spec, reply.is_error(), started.elapsed());
    reply
}
