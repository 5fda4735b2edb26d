//! Where a key lives: the frozen key hash, Redis Cluster hash tags, and key → shard.
//!
//! Placement must never change between builds or versions: a different hash would silently
//! re-home every key. So the hash is xxh3-64 with seed 0, whose output is fixed by its
//! specification, and golden vectors below pin it. (ahash is for in-process tables only.)

use xxhash_rust::xxh3::xxh3_64;

/// The part of a key that decides its shard, as Redis Cluster does: if the key holds `{…}` with
/// at least one byte inside, only that part is hashed, so related keys can share a shard.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The frozen 64-bit hash (xxh3-64, seed 0) used for placement and for the ring.
#[inline]
pub fn stable_hash(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// The shard that owns `key` among `shards` shards: `xxh3(hash_tag(key)) mod shards`.
#[inline]
pub fn shard_of(key: &[u8], shards: u32) -> u32 {
    (stable_hash(hash_tag(key)) % u64::from(shards)) as u32
}

/// [`shard_of`] for a key whose [`stable_hash`] is already known (a write group hashes each
/// key once for its lock stripe, its shard and its scan order): the key is hashed again only
/// if it has a hash tag.
#[inline]
pub fn shard_of_hashed(key: &[u8], hash: u64, shards: u32) -> u32 {
    let tag = hash_tag(key);
    // A tag is strictly shorter than its key (the braces), so equal lengths mean no tag.
    let hash = if tag.len() == key.len() {
        hash
    } else {
        stable_hash(tag)
    };
    (hash % u64::from(shards)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_hash_gives_the_same_shard() {
        for key in [
            &b"plain"[..],
            b"{user1000}.following",
            b"foo{}{bar}",
            b"{}",
            b"",
        ] {
            for shards in [1, 7, 256] {
                assert_eq!(
                    shard_of_hashed(key, stable_hash(key), shards),
                    shard_of(key, shards),
                    "{}",
                    String::from_utf8_lossy(key)
                );
            }
        }
    }

    #[test]
    fn hash_tag_follows_redis_cluster_rules() {
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"plain"), b"plain");
        assert_eq!(hash_tag(b"{unclosed"), b"{unclosed");
        assert_eq!(hash_tag(b""), b"");
    }

    /// Golden vectors: if these change, every deployed cluster would re-home its keys.
    #[test]
    fn stable_hash_golden_vectors() {
        assert_eq!(stable_hash(b""), 0x2d06_8005_38d3_94c2);
        assert_eq!(stable_hash(b"a"), 0xe6c6_32b6_1e96_4e1f);
        assert_eq!(stable_hash(b"foo"), 0xab6e_5f64_077e_7d8a);
        assert_eq!(stable_hash(b"user:1000"), 0xfb68_41b2_068c_0c9f);
    }

    #[test]
    fn shard_of_golden_vectors() {
        assert_eq!(
            shard_of(b"foo", 256),
            (0xab6e_5f64_077e_7d8a_u64 % 256) as u32
        );
        assert_eq!(shard_of(b"{foo}:bar", 256), shard_of(b"foo", 256));
        assert_eq!(shard_of(b"{user}:1", 1024), shard_of(b"{user}:2", 1024));
    }

    #[test]
    fn shards_are_evenly_used() {
        let shards = 256;
        let mut counts = vec![0u32; shards as usize];
        for i in 0..256_000u32 {
            counts[shard_of(format!("key:{i}").as_bytes(), shards) as usize] += 1;
        }
        let (min, max) = (counts.iter().min(), counts.iter().max());
        assert!(min > Some(&800) && max < Some(&1200), "{min:?} {max:?}");
    }
}
