//! Reading numbers and options out of command arguments, with Redis's exact errors.

use bytes::Bytes;

use crate::resp::request::parse_i64;
use crate::resp::Reply;

/// `ERR value is not an integer or out of range`.
pub const NOT_INTEGER: Reply = Reply::error("ERR value is not an integer or out of range");
/// `ERR value is not a valid float`.
pub const NOT_FLOAT: Reply = Reply::error("ERR value is not a valid float");
/// `ERR syntax error`.
pub const SYNTAX: Reply = Reply::error("ERR syntax error");
/// `ERR increment or decrement would overflow`.
pub const OVERFLOW: Reply = Reply::error("ERR increment or decrement would overflow");
/// `ERR no such key`.
pub const NO_SUCH_KEY: Reply = Reply::error("ERR no such key");
/// An argument as a 64-bit integer, or Redis's not-an-integer error.
pub fn int_arg(arg: &Bytes) -> Result<i64, Reply> {
    parse_i64(arg).ok_or(NOT_INTEGER)
}

/// Redis's `invalid expire time in '<cmd>' command` error.
pub fn invalid_expire(command: &str) -> Reply {
    Reply::error_owned(format!("ERR invalid expire time in '{command}' command"))
}

/// Whether an argument equals an option name, ignoring ASCII case.
pub fn is_opt(arg: &[u8], name: &str) -> bool {
    arg.eq_ignore_ascii_case(name.as_bytes())
}
