//! Which shards this node serves, at which map epoch: the check every proxy request passes
//! before it runs.
//!
//! The view is swapped whole when a new map is applied (`ArcSwap`): a request reads epoch and
//! shard set from one consistent snapshot with one atomic load and no lock, and a map change
//! never blocks requests.

use std::sync::Arc;

use arc_swap::ArcSwap;
use ringkv_common::internal::{Envelope, Refusal};
use tokio::sync::Notify;

/// The shards served at one map epoch.
#[derive(Debug)]
pub struct View {
    /// The epoch of the map this view comes from (0: no map yet).
    pub epoch: u64,
    /// `served[s]`: whether this node is shard `s`'s primary.
    served: Box<[bool]>,
}

impl View {
    /// A view of `epoch` serving the shards flagged in `served`.
    pub fn new(epoch: u64, served: Box<[bool]>) -> View {
        View { epoch, served }
    }

    /// How many shards are served.
    pub fn served_count(&self) -> usize {
        self.served.iter().filter(|&&s| s).count()
    }

    /// Whether shard `shard` is served.
    pub fn serves(&self, shard: u32) -> bool {
        self.served.get(shard as usize).copied().unwrap_or(false)
    }
}

/// The current view, and a way for requests to ask for a fresher one.
#[derive(Debug)]
pub struct Ownership {
    view: ArcSwap<View>,
    /// Woken when a request carried a newer epoch than ours: the membership task then reads
    /// the map from etcd at once instead of waiting for its watch.
    stale: Notify,
}

impl Ownership {
    /// Serving nothing until the first map arrives.
    pub fn new(shards: u32) -> Ownership {
        Ownership {
            view: ArcSwap::from_pointee(View::new(0, vec![false; shards as usize].into())),
            stale: Notify::new(),
        }
    }

    /// The current view.
    pub fn view(&self) -> Arc<View> {
        self.view.load_full()
    }

    /// Replaces the view (the caller has opened every shard it serves first).
    pub fn publish(&self, view: View) {
        self.view.store(Arc::new(view));
    }

    /// Whether a request routed by `envelope` may run here: the node must serve the shard,
    /// and its map must not be older than the proxy's.
    pub fn check(&self, envelope: Envelope) -> Result<(), Refusal> {
        self.snapshot().check(envelope)
    }

    /// The current view, loaded once, for a request that checks several shards (`SHARDS`):
    /// all of them are then checked against the same map, even if a new one is applied
    /// meanwhile.
    pub fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            view: self.view.load(),
            stale: &self.stale,
        }
    }

    /// Completes when a request has seen a newer epoch than this node's.
    pub async fn stale_seen(&self) {
        self.stale.notified().await;
    }
}

/// One loaded view of [`Ownership`], to check a request's shards against.
pub struct Snapshot<'a> {
    view: arc_swap::Guard<Arc<View>>,
    stale: &'a Notify,
}

impl Snapshot<'_> {
    /// [`Ownership::check`] against this snapshot.
    pub fn check(&self, envelope: Envelope) -> Result<(), Refusal> {
        if envelope.epoch > self.view.epoch {
            self.stale.notify_one();
            return Err(Refusal::Stale {
                epoch: self.view.epoch,
            });
        }
        if !self.view.serves(envelope.shard) {
            return Err(Refusal::Moved {
                shard: envelope.shard,
                epoch: self.view.epoch,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_run_only_on_served_shards_at_a_known_epoch() {
        let ownership = Ownership::new(4);
        let at = |shard, epoch| Envelope { shard, epoch };
        assert_eq!(
            ownership.check(at(0, 1)),
            Err(Refusal::Stale { epoch: 0 }),
            "no map yet"
        );
        ownership.publish(View::new(3, vec![true, false, true, false].into()));
        assert_eq!(ownership.check(at(0, 3)), Ok(()));
        assert_eq!(
            ownership.check(at(2, 2)),
            Ok(()),
            "an older map that agrees"
        );
        assert_eq!(
            ownership.check(at(1, 3)),
            Err(Refusal::Moved { shard: 1, epoch: 3 })
        );
        assert_eq!(
            ownership.check(at(0, 4)),
            Err(Refusal::Stale { epoch: 3 }),
            "the proxy knows a newer map"
        );
        assert_eq!(
            ownership.check(at(9, 3)),
            Err(Refusal::Moved { shard: 9, epoch: 3 }),
            "a shard beyond the map"
        );
        assert_eq!(ownership.view().served_count(), 2);
    }

    #[test]
    fn a_snapshot_checks_every_shard_against_the_map_it_loaded() {
        let ownership = Ownership::new(2);
        ownership.publish(View::new(1, vec![true, true].into()));
        let snapshot = ownership.snapshot();
        let at = |shard| Envelope { shard, epoch: 1 };
        assert_eq!(snapshot.check(at(0)), Ok(()));
        // A map moving shard 1 away is applied halfway through the request's keys.
        ownership.publish(View::new(2, vec![true, false].into()));
        assert_eq!(snapshot.check(at(1)), Ok(()), "the request's own map");
        assert_eq!(
            ownership.check(at(1)),
            Err(Refusal::Moved { shard: 1, epoch: 2 }),
            "a request after the change"
        );
    }
}
