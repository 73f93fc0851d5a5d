/// An ISO 4217 currency code: three upper-case letters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Currency(String);

impl Currency {
    /// Parses a code in any case; `None` is the store's default, `USD`.
    ///
    /// # Errors
    /// Not three letters.
    pub fn parse(raw: Option<&str>) -> Result<Self, crate::error::Violation> {
        let code = raw.unwrap_or("USD").trim().to_ascii_uppercase();
        if code.len() != 3 || !code.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(crate::error::Violation::Currency);
        }
        Ok(Self(code))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl AsRef<str> for Currency {
    fn as_ref(&self) -> &str {
        &self.0
    }
}
