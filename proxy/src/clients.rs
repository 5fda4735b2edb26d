//! Every connected client, as other connections see it: what CLIENT LIST prints and what
//! CLIENT KILL closes.
//!
//! A connection's session belongs to its own task, on its own event loop, so the registry
//! keeps a [`Listed`] per connection that the task publishes to: what rarely changes (name,
//! library, user, protocol, a transaction's queue) is copied in when a command changes it,
//! and the last command and when it ran are stored once per batch, two relaxed stores on a
//! line only that connection writes. The registry's lock is taken to join, to leave, and by
//! CLIENT LIST and CLIENT KILL, never per request.
//!
//! CLIENT KILL marks the client killed and wakes its task ([`Killed`]), which closes the
//! connection once the batch it may be running is answered: the same point QUIT closes at.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use ringkv_common::acl::User;
use ringkv_common::command::CommandSpec;
use ringkv_common::resp::Protocol;

use crate::session::Session;

/// The connected clients, by id (CLIENT LIST lists them in id order, as Redis does).
#[derive(Debug, Default)]
pub struct Clients {
    by_id: Mutex<BTreeMap<u64, Arc<Listed>>>,
}

/// One client as other connections see it.
#[derive(Debug)]
pub struct Listed {
    /// The session's id.
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// The address it connected to.
    pub local: SocketAddr,
    /// Its socket's descriptor.
    pub fd: i32,
    /// When it connected.
    pub connected_at: Instant,
    /// The session's fields that only commands the connection answers itself change.
    described: Mutex<Described>,
    /// Milliseconds from `connected_at` to the end of the client's last batch (`idle`).
    last_at_ms: AtomicU64,
    /// The last command the client sent (`cmd`), null before the first: always a
    /// `&'static CommandSpec`.
    last_command: AtomicPtr<CommandSpec>,
    /// Set by CLIENT KILL; the connection closes once it sees it.
    killed: AtomicBool,
    /// The connection task, woken when `killed` is set.
    waker: AtomicWaker,
}

/// The part of a session other connections print, as of the last command that changed it.
#[derive(Debug, Clone, Default)]
pub struct Described {
    /// CLIENT SETNAME.
    pub name: Option<Bytes>,
    /// CLIENT SETINFO LIB-NAME.
    pub lib_name: Option<Bytes>,
    /// CLIENT SETINFO LIB-VER.
    pub lib_ver: Option<Bytes>,
    /// The authenticated user (`None`: not yet, shown as `default` as Redis does).
    pub user: Option<Arc<User>>,
    /// RESP2 or RESP3.
    pub protocol: Protocol,
    /// The selected database.
    pub db: u32,
    /// The commands queued since MULTI; `None` outside a transaction.
    pub queued: Option<usize>,
}

impl Described {
    /// What `session` shows now.
    pub fn of(session: &Session) -> Described {
        Described {
            name: session.name.clone(),
            lib_name: session.lib_name.clone(),
            lib_ver: session.lib_ver.clone(),
            user: session.user.clone(),
            protocol: session.protocol,
            db: session.db,
            queued: session.transaction.as_ref().map(|t| t.queued.len()),
        }
    }

    /// The user's name, `default` before authentication as in Redis.
    pub fn user_name(&self) -> &str {
        self.user.as_ref().map_or("default", |u| u.name.as_str())
    }
}

impl Listed {
    /// Copies in what `session` shows now: call after a command that may have changed its
    /// name, library, user, protocol or transaction.
    pub fn publish(&self, session: &Session) {
        *lock(&self.described) = Described::of(session);
    }

    /// What the session showed when it last published.
    pub fn described(&self) -> Described {
        lock(&self.described).clone()
    }

    /// Notes the end of a batch whose last command was `last`.
    pub fn touch(&self, last: Option<&'static CommandSpec>) {
        let ms = u64::try_from(self.connected_at.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_at_ms.store(ms, Ordering::Relaxed);
        if let Some(spec) = last {
            self.last_command
                .store(ptr::from_ref(spec).cast_mut(), Ordering::Relaxed);
        }
    }

    /// Whole seconds since the end of the client's last batch (since it connected, before
    /// any).
    pub fn idle_secs(&self) -> u64 {
        let age = u64::try_from(self.connected_at.elapsed().as_millis()).unwrap_or(u64::MAX);
        age.saturating_sub(self.last_at_ms.load(Ordering::Relaxed)) / 1000
    }

    /// The last command the client sent, if any.
    pub fn last_command(&self) -> Option<&'static CommandSpec> {
        let spec = self.last_command.load(Ordering::Relaxed);
        // SAFETY: `touch` is the only store, and it stores a `&'static CommandSpec`: the
        // pointer is null or valid for the whole program and never written through.
        unsafe { spec.as_ref() }
    }

    /// Whether CLIENT KILL closed it.
    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// CLIENT KILL: the connection closes once it sees it (after the batch it may be
    /// answering).
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Completes once the client is killed.
    pub fn killed(&self) -> Killed<'_> {
        Killed(self)
    }
}

/// Completes when its client is killed (see [`Listed::kill`]).
pub struct Killed<'a>(&'a Listed);

impl Future for Killed<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.is_killed() {
            return Poll::Ready(());
        }
        self.0.waker.register(cx.waker());
        // A kill between the check and the registration woke no one: look again.
        if self.0.is_killed() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Leaves the registry when dropped.
#[derive(Debug)]
pub struct Registered<'a> {
    clients: &'a Clients,
    listed: Arc<Listed>,
}

impl Registered<'_> {
    /// The client as listed.
    pub fn listed(&self) -> &Arc<Listed> {
        &self.listed
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        lock(&self.clients.by_id).remove(&self.listed.id);
    }
}

impl Clients {
    /// Lists `session`'s client until the result is dropped.
    pub fn register(&self, session: &Session) -> Registered<'_> {
        let listed = Arc::new(Listed {
            id: session.id,
            peer: session.peer,
            local: session.local,
            fd: session.fd,
            connected_at: session.connected_at,
            described: Mutex::new(Described::of(session)),
            last_at_ms: AtomicU64::new(0),
            last_command: AtomicPtr::new(ptr::null_mut()),
            killed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        lock(&self.by_id).insert(listed.id, Arc::clone(&listed));
        Registered {
            clients: self,
            listed,
        }
    }

    /// Every client not killed, in id order (a copy: the registry is not held meanwhile).
    pub fn all(&self) -> Vec<Arc<Listed>> {
        lock(&self.by_id)
            .values()
            .filter(|c| !c.is_killed())
            .cloned()
            .collect()
    }

    /// The client with this id, unless it is gone or killed.
    pub fn get(&self, id: u64) -> Option<Arc<Listed>> {
        lock(&self.by_id)
            .get(&id)
            .filter(|c| !c.is_killed())
            .cloned()
    }
}

/// Locks a registry mutex. A panic while one was held left nothing half-written that the
/// listing could not print (each holder replaces or reads a whole value), so a poisoned lock
/// is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::session::test_session as session;

    #[test]
    fn a_client_is_listed_until_its_registration_drops() {
        let clients = Clients::default();
        let (a, b) = (session(), session());
        let ra = clients.register(&a);
        let rb = clients.register(&b);
        let ids: Vec<u64> = clients.all().iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![a.id, b.id]);
        drop(ra);
        assert!(clients.get(a.id).is_none());
        assert_eq!(clients.get(b.id).map(|c| c.id), Some(b.id));
        drop(rb);
        assert!(clients.all().is_empty());
    }

    #[test]
    fn a_killed_client_is_no_longer_listed_and_its_future_completes() {
        let clients = Clients::default();
        let a = session();
        let registered = clients.register(&a);
        let listed = Arc::clone(registered.listed());
        let mut killed = std::pin::pin!(listed.killed());
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(killed.as_mut().poll(&mut cx).is_pending());
        listed.kill();
        assert!(killed.as_mut().poll(&mut cx).is_ready());
        assert!(clients.get(a.id).is_none());
        assert!(clients.all().is_empty());
    }

    #[test]
    fn the_last_command_and_what_the_session_published_are_shown() {
        let clients = Clients::default();
        let mut a = session();
        let registered = clients.register(&a);
        let listed = registered.listed();
        assert!(listed.last_command().is_none());
        let get = ringkv_common::command::resolve(&[Bytes::from_static(b"GET"), Bytes::new()])
            .expect("GET");
        listed.touch(Some(get));
        assert_eq!(listed.last_command().map(|s| s.name), Some("get"));
        listed.touch(None);
        assert_eq!(listed.last_command().map(|s| s.name), Some("get"));
        assert_eq!(listed.idle_secs(), 0);
        a.set_name(b"worker");
        assert!(listed.described().name.is_none());
        listed.publish(&a);
        assert_eq!(listed.described().name.as_deref(), Some(&b"worker"[..]));
        assert_eq!(listed.described().user_name(), "default");
    }
}
