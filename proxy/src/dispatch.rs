//! From a request's arguments to its reply: look the command up in the table (which checks
//! the arity and gives Redis's unknown-command errors), then answer it here if its route is
//! `Local`, or hand it to the backend.
//!
//! This layer knows commands but not bytes: the connection parses and encodes, the backend
//! stores.

use std::time::Instant;

use bytes::Bytes;
use ringkv_common::acl::NOAUTH;
use ringkv_common::command::{self, Cmd, CommandSpec, Route};
use ringkv_common::resp::Reply;

use crate::cmd;
use crate::context::ServerContext;
use crate::session::Session;

/// The reply to one request, and whether a command ran (unknown commands and wrong arity
/// are not counted in `total_commands_processed`, as in Redis).
#[derive(Debug)]
pub struct Outcome {
    /// What to send back.
    pub reply: Reply,
    /// Whether the command was found and run.
    pub ran: bool,
    /// Commands EXEC ran inside it, and the error replies among theirs (0 for any other
    /// command): each counts in the server's totals, as in Redis.
    pub inner_commands: u64,
    /// See `inner_commands`.
    pub inner_errors: u64,
    /// Whether it may have written to the engine and answered as if it did (its batch must
    /// then end with `Backend::end_batch` before replies are sent). An error acknowledges
    /// nothing, so it has nothing to make durable: after a full disk, writes that fail keep
    /// getting their error instead of finding the log still broken.
    pub wrote: bool,
}

/// Whether the session may run `spec` on `args`: NOAUTH before authentication (except for the
/// commands that authenticate or leave), NOPERM outside the user's commands or keys.
#[inline]
pub fn authorize(session: &Session, spec: &CommandSpec, args: &[Bytes]) -> Result<(), Reply> {
    if spec.has(command::flag::NO_AUTH) {
        return Ok(());
    }
    match &session.user {
        None => Err(NOAUTH),
        Some(user) => user.check(spec, args),
    }
}

/// Runs one request. `args` is not empty (the parser never yields an empty request).
pub async fn dispatch(session: &mut Session, ctx: &ServerContext, args: &[Bytes]) -> Outcome {
    let spec = match command::resolve(args) {
        Ok(spec) => spec,
        Err(reply) => {
            let named = command::named(args).ok();
            if let Some(spec) = named {
                ctx.stats.commands.reject(spec);
                session.last_command = Some(spec);
            }
            let reply = cmd::transaction::refused(session, named, reply);
            return Outcome::refused(reply);
        }
    };
    session.last_command = Some(spec);
    if let Err(reply) = authorize(session, spec, args) {
        ctx.stats.commands.reject(spec);
        let reply = cmd::transaction::refused(session, Some(spec), reply);
        return Outcome::refused(reply);
    }
    let started = Instant::now();
    if spec.cmd == Cmd::Exec {
        // Not in `cmd::run`: EXEC runs queued `Local` commands through it.
        let exec = cmd::transaction::exec(session, ctx).await;
        session.publish();
        ctx.stats
            .record_command(spec, exec.reply.is_error(), started.elapsed());
        return Outcome {
            reply: exec.reply,
            ran: true,
            inner_commands: exec.commands,
            inner_errors: exec.errors,
            // Its commands may have written; a batch with nothing to make durable costs
            // `end_batch` no syscall.
            wrote: exec.commands > 0,
        };
    }
    let reply = match spec.route {
        Route::Local => {
            let reply = cmd::run(spec, args, session, ctx).await;
            if cmd::changes_description(spec.cmd) {
                session.publish();
            }
            reply
        }
        Route::SingleShard | Route::MultiKey | Route::AllShards => {
            ctx.backend.execute(spec, args).await
        }
    };
    let took = started.elapsed();
    ctx.stats.record_command(spec, reply.is_error(), took);
    ctx.slowlog.note(spec, args, took, session);
    let wrote = spec.route != Route::Local && spec.has(command::flag::WRITE) && !reply.is_error();
    Outcome {
        reply,
        ran: true,
        inner_commands: 0,
        inner_errors: 0,
        wrote,
    }
}

impl Outcome {
    /// A request refused before it ran (unknown, wrong arity, not permitted).
    fn refused(reply: Reply) -> Outcome {
        Outcome {
            reply,
            ran: false,
            inner_commands: 0,
            inner_errors: 0,
            wrote: false,
        }
    }
}
