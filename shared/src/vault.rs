//! Kong's vault references, the `env` vault: a referenceable field may
//! hold `{vault://env/NAME}` instead of a secret. The reference is what is
//! stored, shown and sent; the secret is read from the environment of the
//! process that uses it (gantry-proxy, or Envoy through an
//! `environment_variable` data source), never written back.
//!
//! As Kong's env vault: the resource is upper-cased and `-` becomes `_`,
//! so `{vault://env/redis-password}` reads `REDIS_PASSWORD`.

/// A parsed reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The environment variable it names.
    pub env: String,
}

/// Whether a value is written as a vault reference at all (it may still be
/// a malformed one; [`Reference::parse`] says).
pub fn is_reference(s: &str) -> bool {
    s.starts_with("{vault://")
}

impl Reference {
    /// Parses `{vault://env/NAME}`. The errors say what is wrong with the
    /// reference; a reference holds no secret, so they may quote it.
    pub fn parse(s: &str) -> Result<Reference, String> {
        let body = s
            .strip_prefix("{vault://")
            .and_then(|b| b.strip_suffix('}'))
            .ok_or_else(|| "a vault reference is written {vault://env/NAME}".to_string())?;
        let (vault, resource) = body
            .split_once('/')
            .ok_or_else(|| "a vault reference is written {vault://env/NAME}".to_string())?;
        if vault != "env" {
            return Err(format!(
                "vault '{vault}' is not available: only the env vault is"
            ));
        }
        if resource.is_empty() {
            return Err("the reference names no environment variable".into());
        }
        if resource.contains(['/', '?', '#']) {
            return Err(
                "only whole environment variables can be referenced ({vault://env/NAME})".into(),
            );
        }
        let env: String = resource
            .chars()
            .map(|c| {
                if c == '-' {
                    '_'
                } else {
                    c.to_ascii_uppercase()
                }
            })
            .collect();
        if !env.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            || env.as_bytes()[0].is_ascii_digit()
        {
            return Err(format!("'{resource}' is not an environment variable name"));
        }
        Ok(Reference { env })
    }

    /// The secret, from this process's environment. The error names the
    /// variable, never a value.
    pub fn resolve(&self) -> Result<String, String> {
        std::env::var(&self.env)
            .map_err(|_| format!("environment variable {} is not set", self.env))
    }
}

thread_local! {
    static DEFERRED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with references checked but not resolved: the control plane
/// compiles what a node will (admission) without the node's environment.
pub fn with_deferred<T>(f: impl FnOnce() -> T) -> T {
    let before = DEFERRED.with(|d| d.replace(true));
    let out = f();
    DEFERRED.with(|d| d.set(before));
    out
}

/// Whether references are being checked rather than resolved.
pub fn is_deferred() -> bool {
    DEFERRED.with(|d| d.get())
}

/// What a deferred reference resolves to: checked, not read.
pub const DEFERRED_VALUE: &str = "deferred-vault-reference";

/// A field's value with a reference resolved; anything else as it is.
pub fn resolve(value: &str) -> Result<String, String> {
    if !is_reference(value) {
        return Ok(value.to_string());
    }
    let r = Reference::parse(value)?;
    if is_deferred() {
        return Ok(DEFERRED_VALUE.into());
    }
    r.resolve().map_err(|e| format!("{value}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kong_names_and_refusals() {
        assert_eq!(
            Reference::parse("{vault://env/redis-password}")
                .unwrap()
                .env,
            "REDIS_PASSWORD"
        );
        assert_eq!(
            Reference::parse("{vault://env/TLS_KEY}").unwrap().env,
            "TLS_KEY"
        );
        for bad in [
            "{vault://env/}",
            "{vault://hcv/secret}",
            "{vault://env/a/b}",
            "{vault://env/1abc}",
            "{vault://env/a b}",
            "{vault://env}",
            "{vault://env/x",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(resolve("plain").unwrap(), "plain");
        let e = resolve("{vault://env/gantry-surely-unset-var}").unwrap_err();
        assert!(e.contains("GANTRY_SURELY_UNSET_VAR"), "{e}");
        assert_eq!(
            with_deferred(|| resolve("{vault://env/gantry-surely-unset-var}")).unwrap(),
            DEFERRED_VALUE
        );
        assert!(with_deferred(|| resolve("{vault://hcv/x}")).is_err());
        assert!(!is_deferred());
    }
}
