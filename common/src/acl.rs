//! Users and what they may run: `--requirepass` and a subset of Redis's ACL file.
//!
//! A file holds one user per line, as Redis's `aclfile`:
//!
//! ```text
//! user default on nopass ~* &* +@all
//! user alice on >s3cret ~app:* +@read +@write -@dangerous
//! user ops on #<sha256 hex> +@all -flushall
//! ```
//!
//! Rules, applied left to right: `on` / `off`; `>password`, `<password`, `#sha256hex`,
//! `!sha256hex`, `nopass`, `resetpass`; `~pattern`, `allkeys`, `resetkeys`; `+@category`,
//! `-@category`, `+command`, `-command` (`+config|get` for one subcommand), `allcommands`,
//! `nocommands`; `&pattern`, `allchannels`, `resetchannels` (accepted, ringkv has no pub/sub);
//! `reset`. Lines starting with `#` and blank lines are skipped. Anything else is refused with
//! its line number, so a typo cannot silently open or close access.
//!
//! A user's command permissions are resolved once into a table indexed by command, so the
//! check on every request is one lookup. Passwords are kept as SHA-256 digests, as Redis does.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::command::{all_specs, command_slots, CommandSpec};
use crate::glob::glob_match;
use crate::resp::Reply;

/// Before AUTH, for any command that needs it.
pub const NOAUTH: Reply = Reply::error("NOAUTH Authentication required.");

/// HELLO without AUTH on a connection that is not authenticated.
pub const NOAUTH_HELLO: Reply = Reply::error(
    "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO \
     AUTH <user> <pass> option can be used to authenticate the client and select the \
     RESP protocol version at the same time",
);

/// A wrong user name or password, or a disabled user.
pub const WRONGPASS: Reply =
    Reply::error("WRONGPASS invalid username-password pair or user is disabled.");

/// AUTH with one argument while the default user has no password.
pub const AUTH_WITHOUT_PASSWORD: Reply = Reply::error(
    "ERR AUTH <password> called without any password configured for the default user. Are you \
     sure your configuration is correct?",
);

/// A key outside the user's patterns.
pub const NOPERM_KEYS: Reply =
    Reply::error("NOPERM this user has no permissions to access one of the keys used as arguments");

/// A command the user may not run.
pub fn noperm_command(name: &str) -> Reply {
    Reply::error_owned(format!(
        "NOPERM this user has no permissions to run the '{name}' command"
    ))
}

/// Which keys a user may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Keys {
    /// Any key (`~*`, `allkeys`).
    All,
    /// Keys matching one of these globs (none: no key at all).
    Patterns(Vec<Vec<u8>>),
}

/// One user and its permissions.
#[derive(Debug, Clone)]
pub struct User {
    /// The name AUTH and CLIENT INFO use.
    pub name: String,
    enabled: bool,
    nopass: bool,
    passwords: Vec<[u8; 32]>,
    /// `commands[cmd as usize]`: whether the user may run it.
    commands: Vec<bool>,
    keys: Keys,
}

fn digest(password: &[u8]) -> [u8; 32] {
    Sha256::digest(password).into()
}

impl User {
    /// A user as Redis creates it: off, no password, no command, no key.
    fn new(name: &str) -> User {
        User {
            name: name.to_string(),
            enabled: false,
            nopass: false,
            passwords: Vec::new(),
            commands: vec![false; command_slots()],
            keys: Keys::Patterns(Vec::new()),
        }
    }

    /// Redis's default user: on, no password, every command and key.
    fn open_default() -> User {
        let mut user = User::new("default");
        for rule in ["on", "nopass", "~*", "&*", "+@all"] {
            // These rules are valid by construction.
            let _ = user.apply(rule);
        }
        user
    }

    /// Whether a new connection is authenticated as this user without AUTH.
    pub fn is_open(&self) -> bool {
        self.enabled && self.nopass
    }

    fn accepts(&self, password: &[u8]) -> bool {
        if !self.enabled {
            return false;
        }
        if self.nopass {
            return true;
        }
        let given = digest(password);
        self.passwords.contains(&given)
    }

    /// Whether the user may run `spec` on `args`: NOPERM naming the command or the keys.
    #[inline]
    pub fn check(&self, spec: &CommandSpec, args: &[bytes::Bytes]) -> Result<(), Reply> {
        if !self
            .commands
            .get(spec.cmd as usize)
            .copied()
            .unwrap_or(false)
        {
            return Err(noperm_command(spec.name));
        }
        if let Keys::Patterns(patterns) = &self.keys {
            for i in spec.key_indexes(args.len()) {
                let key = &args[i];
                if !patterns.iter().any(|p| glob_match(p, key, false)) {
                    return Err(NOPERM_KEYS);
                }
            }
        }
        Ok(())
    }

    fn set_commands(&mut self, allowed: bool, pick: impl Fn(&CommandSpec) -> bool) {
        for spec in all_specs() {
            if pick(spec) {
                self.commands[spec.cmd as usize] = allowed;
            }
        }
    }

    /// Applies one rule; the error says what is wrong with it.
    fn apply(&mut self, rule: &str) -> Result<(), String> {
        let lower = rule.to_ascii_lowercase();
        match lower.as_str() {
            "on" => self.enabled = true,
            "off" => self.enabled = false,
            "nopass" => {
                self.nopass = true;
                self.passwords.clear();
            }
            "resetpass" => {
                self.nopass = false;
                self.passwords.clear();
            }
            "allkeys" => self.keys = Keys::All,
            "resetkeys" => self.keys = Keys::Patterns(Vec::new()),
            "allcommands" => self.set_commands(true, |_| true),
            "nocommands" => self.set_commands(false, |_| true),
            "allchannels" | "resetchannels" => {}
            "reset" => *self = User::new(&self.name),
            _ => return self.apply_with_argument(rule, &lower),
        }
        Ok(())
    }

    fn apply_with_argument(&mut self, rule: &str, lower: &str) -> Result<(), String> {
        let (sigil, rest) = rule.split_at(1);
        match sigil {
            ">" => {
                self.nopass = false;
                let hash = digest(rest.as_bytes());
                if !self.passwords.contains(&hash) {
                    self.passwords.push(hash);
                }
            }
            "<" => {
                let hash = digest(rest.as_bytes());
                self.passwords.retain(|p| *p != hash);
            }
            "#" | "!" => {
                let hash = parse_sha256(rest)
                    .ok_or_else(|| format!("'{rule}': not a SHA-256 hash of 64 hex digits"))?;
                if sigil == "#" {
                    self.nopass = false;
                    if !self.passwords.contains(&hash) {
                        self.passwords.push(hash);
                    }
                } else {
                    self.passwords.retain(|p| *p != hash);
                }
            }
            "~" if rest == "*" => self.keys = Keys::All,
            "~" => {
                if let Keys::Patterns(patterns) = &mut self.keys {
                    patterns.push(rest.as_bytes().to_vec());
                }
            }
            "&" => {}
            "+" | "-" => {
                let allowed = sigil == "+";
                let name = &lower[1..];
                if let Some(category) = name.strip_prefix('@') {
                    if category == "all" {
                        self.set_commands(allowed, |_| true);
                    } else {
                        let tag = format!("@{category}");
                        if !all_specs().any(|s| s.acl_categories().contains(&tag.as_str())) {
                            return Err(format!("'{rule}': unknown command category"));
                        }
                        self.set_commands(allowed, |s| s.acl_categories().contains(&tag.as_str()));
                    }
                } else {
                    let container = format!("{name}|");
                    let mut found = false;
                    for spec in all_specs() {
                        if spec.name == name || spec.name.starts_with(&container) {
                            self.commands[spec.cmd as usize] = allowed;
                            found = true;
                        }
                    }
                    if !found {
                        return Err(format!("'{rule}': unknown command"));
                    }
                }
            }
            _ => {
                return Err(format!(
                    "'{rule}': not a rule ringkv understands (see the README's ACL subset)"
                ))
            }
        }
        Ok(())
    }
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A line of an ACL file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct AclError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Every user, by name.
#[derive(Debug, Clone)]
pub struct Acl {
    users: HashMap<String, Arc<User>>,
}

impl Default for Acl {
    fn default() -> Self {
        Acl::open()
    }
}

impl Acl {
    /// No access control: the default user is on, without password, allowed everything.
    pub fn open() -> Acl {
        let mut users = HashMap::new();
        users.insert("default".to_string(), Arc::new(User::open_default()));
        Acl { users }
    }

    /// `--requirepass`: the default user needs `password`.
    pub fn with_requirepass(password: &str) -> Acl {
        let mut user = User::open_default();
        user.nopass = false;
        user.passwords = vec![digest(password.as_bytes())];
        let mut users = HashMap::new();
        users.insert("default".to_string(), Arc::new(user));
        Acl { users }
    }

    /// Parses an ACL file's text. A file without a `default` user gets Redis's open one.
    pub fn parse(text: &str) -> Result<Acl, AclError> {
        let mut users: HashMap<String, User> = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let bad = |reason: String| AclError {
                line: line_no,
                reason,
            };
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [] => continue,
                [first, ..] if first.starts_with('#') => continue,
                ["user", name, rules @ ..] => {
                    if users.contains_key(*name) {
                        return Err(bad(format!("user '{name}' is defined twice")));
                    }
                    let mut user = User::new(name);
                    for rule in rules {
                        user.apply(rule).map_err(bad)?;
                    }
                    users.insert(name.to_string(), user);
                }
                _ => {
                    return Err(bad(
                        "expected `user <name> <rules…>` (Redis's ACL file syntax)".into(),
                    ))
                }
            }
        }
        users
            .entry("default".to_string())
            .or_insert_with(User::open_default);
        Ok(Acl {
            users: users.into_iter().map(|(n, u)| (n, Arc::new(u))).collect(),
        })
    }

    /// Whether a user of this name exists (CLIENT KILL USER refuses an unknown one).
    pub fn has_user(&self, name: &[u8]) -> bool {
        std::str::from_utf8(name).is_ok_and(|name| self.users.contains_key(name))
    }

    /// The user a new connection starts as: `default` when it needs no password.
    pub fn initial_user(&self) -> Option<Arc<User>> {
        self.users.get("default").filter(|u| u.is_open()).cloned()
    }

    /// AUTH / HELLO AUTH: the user, if the name and password match an enabled user.
    pub fn authenticate(&self, name: &[u8], password: &[u8]) -> Option<Arc<User>> {
        let name = std::str::from_utf8(name).ok()?;
        self.users
            .get(name)
            .filter(|u| u.accepts(password))
            .cloned()
    }

    /// Whether AUTH with only a password makes sense: the default user has a password.
    pub fn default_has_password(&self) -> bool {
        self.users.get("default").is_some_and(|u| !u.nopass)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::lookup;
    use bytes::Bytes;

    fn args(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn allowed(user: &User, words: &[&str]) -> Result<(), Reply> {
        let spec = crate::command::resolve(&args(words)).expect("a known command");
        user.check(spec, &args(words))
    }

    #[test]
    fn categories_commands_and_keys_combine_left_to_right() {
        let acl = Acl::parse(
            "# users\n\nuser alice on >secret ~app:* +@read +@write -@dangerous +flushall -set\n",
        )
        .expect("valid file");
        let alice = acl.authenticate(b"alice", b"secret").expect("alice");
        assert!(allowed(&alice, &["GET", "app:1"]).is_ok());
        assert_eq!(allowed(&alice, &["GET", "other"]), Err(NOPERM_KEYS));
        assert_eq!(
            allowed(&alice, &["SET", "app:1", "v"]),
            Err(noperm_command("set"))
        );
        assert!(allowed(&alice, &["INCR", "app:n"]).is_ok());
        assert!(allowed(&alice, &["FLUSHALL"]).is_ok(), "re-allowed by name");
        assert_eq!(
            allowed(&alice, &["KEYS", "*"]),
            Err(noperm_command("keys")),
            "KEYS is @dangerous"
        );
        assert_eq!(
            allowed(&alice, &["CONFIG", "GET", "port"]),
            Err(noperm_command("config|get"))
        );
        assert!(acl.authenticate(b"alice", b"wrong").is_none());
        assert!(acl.authenticate(b"nobody", b"secret").is_none());
        // No default user in the file: Redis's open one.
        assert!(acl.initial_user().is_some());
    }

    #[test]
    fn passwords_hashes_and_disabled_users() {
        let hash = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
        let acl = Acl::parse(&format!(
            "user default on #{hash} +@all ~*\nuser bob off >pw +@all ~*\nuser carol on nopass +config|get\n"
        ))
        .expect("valid file");
        assert!(acl.initial_user().is_none(), "default has a password");
        assert!(acl.default_has_password());
        assert!(
            acl.authenticate(b"default", b"secret").is_some(),
            "sha256(secret)"
        );
        assert!(acl.authenticate(b"bob", b"pw").is_none(), "bob is off");
        let carol = acl.authenticate(b"carol", b"anything").expect("nopass");
        assert!(allowed(&carol, &["CONFIG", "GET", "port"]).is_ok());
        assert!(allowed(&carol, &["CONFIG", "SET", "port", "1"]).is_err());
        assert!(lookup(b"get").is_some_and(|g| carol.check(g, &args(&["GET", "k"])).is_err()));
    }

    #[test]
    fn mistakes_name_their_line() {
        for (text, line) in [
            ("user a on +@nosuch", 1),
            ("\nuser a on +nosuchcommand", 2),
            ("user a on %R~x", 1),
            ("user a on #abc", 1),
            ("usr a on", 1),
            ("user a on\nuser a off", 2),
        ] {
            let err = Acl::parse(text).expect_err(text);
            assert_eq!(err.line, line, "{text}: {err}");
        }
    }

    #[test]
    fn requirepass_protects_the_default_user() {
        let acl = Acl::with_requirepass("sekret");
        assert!(acl.initial_user().is_none());
        assert!(acl.authenticate(b"default", b"sekret").is_some());
        assert!(acl.authenticate(b"default", b"nope").is_none());
        let open = Acl::open();
        assert!(open.initial_user().is_some());
        assert!(!open.default_has_password());
    }
}
