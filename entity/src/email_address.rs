use std::fmt;

/// A syntactically valid, normalised (trimmed, lower-cased) email address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// # Errors
    /// A message saying what is wrong with the address.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let email = raw.trim().to_lowercase();
        if email.len() > 254 {
            return Err("email must be at most 254 characters".into());
        }
        let Some((local, domain)) = email.rsplit_once('@') else {
            return Err("email must contain @".into());
        };
        let valid_local = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            // What the mailer (lettre) refuses too: an unquoted local part is dot-separated
            // atoms (RFC 5322), none of them empty.
            && !local.contains("..")
            && local
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
        let valid_domain = domain.contains('.')
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !valid_local || !valid_domain {
            return Err("email is not a valid address".into());
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn local_part(&self) -> &str {
        self.0.split('@').next().unwrap_or_default()
    }

    /// The inbox this address reaches: what the mail-bombing limits count and what a draw
    /// takes as one person. The address with any `+tag` removed from its local part
    /// (`ann+shop@example.com` is `ann@example.com`: most providers deliver plus-addressed mail
    /// to the untagged inbox), and at Gmail, which ignores them, without dots
    /// (`ann.lee@googlemail.com` is `annlee@gmail.com`). Other sub-addressing schemes (`-` at
    /// some providers) are not folded.
    pub fn mailbox(&self) -> String {
        mailbox_of(&self.0)
    }
}

/// [`EmailAddress::mailbox`] of an address already stored (lower case, checked at sign-up).
pub fn mailbox_of(email: &str) -> String {
    let (local, domain) = email.rsplit_once('@').unwrap_or((email, ""));
    let untagged = local
        .split('+')
        .next()
        .filter(|l| !l.is_empty())
        .unwrap_or(local);
    match domain {
        "gmail.com" | "googlemail.com" => format!("{}@gmail.com", untagged.replace('.', "")),
        _ => format!("{untagged}@{domain}"),
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for EmailAddress {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::EmailAddress;

    #[test]
    fn addresses_are_normalised() {
        assert_eq!(
            EmailAddress::parse("  Ann@Example.COM ").map(|e| e.to_string()),
            Ok("ann@example.com".into())
        );
    }

    #[test]
    fn plus_tags_and_case_fold_into_one_mailbox() {
        let mailbox = |raw: &str| EmailAddress::parse(raw).map(|e| e.mailbox());
        assert_eq!(
            mailbox("Flood+17@Victim.example"),
            Ok("flood@victim.example".into())
        );
        assert_eq!(
            mailbox("flood@victim.example"),
            Ok("flood@victim.example".into())
        );
        assert_eq!(mailbox("+x@victim.example"), Ok("+x@victim.example".into()));
        assert_eq!(
            mailbox("Ann.Lee+drop@googlemail.com"),
            Ok("annlee@gmail.com".into())
        );
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "a b@example.com",
            "ann@-x.com",
            ".a@x.com",
            "a..b@example.com",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
