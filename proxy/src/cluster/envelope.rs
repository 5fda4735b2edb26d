//! The envelope a request to a storage node travels in (`SHARD <shard> <epoch>`, `SHARDS
//! <epoch>`), with its shard and epoch arguments made once per thread.
//!
//! Putting an argument into a request clones its `Bytes`, which updates a reference count.
//! When every event loop cloned the same epoch and shard-id arguments, those counts moved
//! between the cores on nearly every request: cluster SET -P 16 ran ~6% faster on ~7% less
//! proxy CPU once each thread kept its own arguments (as much as with arguments that have no
//! count at all), so a count stays in the cache of the core that updates it. A thread's
//! shard ids take about 40 bytes per shard it has sent to.

use std::cell::RefCell;

use bytes::Bytes;
use ringkv_common::internal::{SHARD, SHARDS};

thread_local! {
    /// This thread's arguments, made as requests need them.
    static ARGS: RefCell<Args> = RefCell::new(Args::default());
}

/// One thread's envelope arguments.
#[derive(Default)]
struct Args {
    /// The last epoch a request was routed by, and its argument.
    epoch: Option<(u64, Bytes)>,
    /// `shards[s]`: shard `s`'s id as an argument (grown to the highest shard asked for).
    shards: Vec<Bytes>,
}

impl Args {
    fn epoch(&mut self, epoch: u64) -> Bytes {
        match &self.epoch {
            Some((cached, arg)) if *cached == epoch => arg.clone(),
            _ => {
                let arg = number(epoch);
                self.epoch = Some((epoch, arg.clone()));
                arg
            }
        }
    }

    fn shard(&mut self, shard: u32) -> Bytes {
        let index = shard as usize;
        while self.shards.len() <= index {
            self.shards.push(number(self.shards.len() as u64));
        }
        self.shards[index].clone()
    }
}

/// `n` in decimal, as an argument.
fn number(n: u64) -> Bytes {
    Bytes::copy_from_slice(itoa::Buffer::new().format(n).as_bytes())
}

/// `SHARD <shard> <epoch>` followed by `args`: a request for one shard.
pub fn shard(shard: u32, epoch: u64, args: &[Bytes]) -> Vec<Bytes> {
    let mut request = Vec::with_capacity(args.len() + 3);
    request.push(Bytes::from_static(SHARD));
    ARGS.with_borrow_mut(|own| {
        request.push(own.shard(shard));
        request.push(own.epoch(epoch));
    });
    request.extend_from_slice(args);
    request
}

/// `SHARDS <epoch>` followed by `args`: one node's part of a multi-key command.
pub fn shards(epoch: u64, args: &[Bytes]) -> Vec<Bytes> {
    let mut request = Vec::with_capacity(args.len() + 2);
    request.push(Bytes::from_static(SHARDS));
    request.push(ARGS.with_borrow_mut(|own| own.epoch(epoch)));
    request.extend_from_slice(args);
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(request: &[Bytes]) -> Vec<&str> {
        request
            .iter()
            .map(|arg| std::str::from_utf8(arg).unwrap_or("?"))
            .collect()
    }

    #[test]
    fn envelopes_carry_the_shard_and_epoch_they_are_given() {
        let args = [Bytes::from_static(b"SET"), Bytes::from_static(b"k")];
        assert_eq!(
            words(&shard(17, 4, &args)),
            ["SHARD", "17", "4", "SET", "k"]
        );
        assert_eq!(words(&shard(3, 4, &args)), ["SHARD", "3", "4", "SET", "k"]);
        // A new map: the epoch argument follows it.
        assert_eq!(
            words(&shard(17, 5, &args)),
            ["SHARD", "17", "5", "SET", "k"]
        );
        assert_eq!(words(&shards(5, &args)), ["SHARDS", "5", "SET", "k"]);
        assert_eq!(words(&shards(4, &args)), ["SHARDS", "4", "SET", "k"]);
        assert_eq!(
            words(&shard(65_535, u64::MAX, &args[..1])),
            ["SHARD", "65535", "18446744073709551615", "SET"]
        );
    }
}
