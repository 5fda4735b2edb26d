//! Shard column-family handles, and creating many families in one RocksDB call.
//!
//! The `rocksdb` crate creates families one at a time, and after each RocksDB rewrites its
//! OPTIONS file, which lists every family's options: a node given 256 new shards spent
//! 19.4 s of CPU creating them, a cost growing with the square of the count. RocksDB's
//! `CreateColumnFamilies` writes the file once for the lot; the crate does not wrap it, so
//! [`create`] calls the C API itself.

use std::ffi::{c_char, CStr, CString};
use std::ptr::{self, NonNull};
use std::sync::Arc;

use librocksdb_sys as ffi;
use rocksdb::{AsColumnFamilyRef, AsRawPtr, BoundColumnFamily, Options, DB};

/// A shard family's handle, usable wherever the crate takes a family.
pub(crate) enum Handle {
    /// Opened with the database: the crate owns it; this keeps it alive.
    Opened(Arc<BoundColumnFamily<'static>>),
    /// Made by [`create`]: destroyed when dropped, which must happen before the database
    /// closes (the engine declares its handles before its database).
    Created(NonNull<ffi::rocksdb_column_family_handle_t>),
}

// SAFETY: a RocksDB column family handle is safe to use from any thread (the crate marks
// its own handles Send and Sync for the same reason); `Created` is owned by one `Handle`.
unsafe impl Send for Handle {}
unsafe impl Sync for Handle {}

impl AsColumnFamilyRef for Handle {
    fn inner(&self) -> *mut ffi::rocksdb_column_family_handle_t {
        match self {
            Handle::Opened(family) => family.inner(),
            Handle::Created(raw) => raw.as_ptr(),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Handle::Created(raw) = self {
            // SAFETY: `raw` came from rocksdb_create_column_families and is destroyed once.
            unsafe { ffi::rocksdb_column_family_handle_destroy(raw.as_ptr()) }
        }
    }
}

/// Creates the families `names` with `options`, writing RocksDB's OPTIONS file once.
/// Returns a handle for each family created, in the order of `names`, and the error that
/// stopped it early, if any (the families before it exist, and their handles are returned).
pub(crate) fn create(
    db: &DB,
    options: &Options,
    names: &[String],
) -> (Vec<Handle>, Option<String>) {
    let names: Result<Vec<CString>, _> = names.iter().map(|n| CString::new(n.as_str())).collect();
    let names = match names {
        Ok(names) => names,
        Err(err) => return (Vec::new(), Some(format!("bad column family name: {err}"))),
    };
    let Ok(count) = i32::try_from(names.len()) else {
        return (
            Vec::new(),
            Some(format!("{} column families in one call", names.len())),
        );
    };
    let pointers: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
    let mut created: usize = 0;
    let mut err: *mut c_char = ptr::null_mut();
    // SAFETY: the database and options outlive the call, `pointers` holds `count` C strings
    // that outlive it, and `created` and `err` are written by it.
    let list = unsafe {
        ffi::rocksdb_create_column_families(
            db.as_raw_ptr(),
            options.as_raw_ptr(),
            count,
            pointers.as_ptr(),
            &mut created,
            &mut err,
        )
    };
    let mut handles = Vec::with_capacity(created);
    if !list.is_null() {
        for i in 0..created {
            // SAFETY: the call returned an array of `created` handles.
            if let Some(raw) = NonNull::new(unsafe { *list.add(i) }) {
                handles.push(Handle::Created(raw));
            }
        }
        // SAFETY: frees the array only; its handles are now owned by `handles`.
        unsafe { ffi::rocksdb_create_column_families_destroy(list) };
    }
    let error = NonNull::new(err).map(|err| {
        // SAFETY: RocksDB set `err` to a NUL-terminated string it allocated.
        let text = unsafe { CStr::from_ptr(err.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: allocated by RocksDB, freed once.
        unsafe { ffi::rocksdb_free(err.as_ptr().cast()) };
        text
    });
    (handles, error)
}
