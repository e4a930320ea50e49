//! Redacting `Debug` for secrets: signing secrets, provider keys, SMTP passwords, SMS tokens,
//! access tokens and API tokens print as `"<redacted>"` (or `""` when unset, which is worth
//! seeing), so no `{:?}` in a log line, panic message or error chain can leak one.

use std::fmt;

/// Shows a secret as `"<redacted>"`, or `""` when it is empty.
#[derive(Clone, Copy)]
pub(crate) struct Redacted<'a>(pub &'a str);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("\"<redacted>\"")
        }
    }
}

/// A secret string (an API token given on the command line or in the environment) whose `Debug`
/// is redacted; [`SecretString::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Redacted(&self.0).fmt(f)
    }
}

impl std::str::FromStr for SecretString {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(text.to_owned()))
    }
}

impl From<String> for SecretString {
    fn from(text: String) -> Self {
        Self(text)
    }
}

impl From<&str> for SecretString {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_show() {
        assert_eq!(format!("{:?}", Redacted("hunter2")), "\"<redacted>\"");
        assert_eq!(format!("{:?}", Redacted("")), "\"\"");
        let token = SecretString::from("fgadm_1");
        assert_eq!(format!("{token:?}"), "\"<redacted>\"");
        assert_eq!(token.expose(), "fgadm_1");
    }
}
