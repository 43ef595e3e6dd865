//! Where a semantic error is: the dotted key and, found in the source text, its line.

use crate::config::ConfigError;

/// Finds the line a semantic error refers to. YAML values carry no spans after serde, so this
/// looks for the entity's name (a product, client kind …) and then the key's last segment
/// below it; good enough to send an operator to the right place.
pub struct Locator<'a> {
    pub src: &'a str,
}

impl Locator<'_> {
    pub fn invalid(&self, key: &str, entity: Option<&str>, reason: &str) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_string(),
            line: self.line(key, entity),
            reason: reason.to_string(),
        }
    }

    /// The first line holding the value `text` after the first line holding `below` after
    /// the first line holding `entity` (a value inside a section of an entity).
    pub fn line_below(&self, entity: &str, below: &str, text: &str) -> Option<usize> {
        let lines: Vec<&str> = self.src.lines().collect();
        let e = lines.iter().position(|l| l.contains(entity))?;
        let b = e + lines[e..].iter().position(|l| l.contains(below))?;
        // `text` as a whole value: `/logout` is not found in `/logout/all`.
        let whole = |l: &str| {
            l.match_indices(text).any(|(i, _)| {
                l[i + text.len()..]
                    .chars()
                    .next()
                    .is_none_or(|c| !(c.is_alphanumeric() || "/-_.~%".contains(c)))
            })
        };
        lines[b..].iter().position(|l| whole(l)).map(|n| b + n + 1)
    }

    /// The first line holding `text` (a file name, an address).
    pub fn line_of(&self, text: &str) -> Option<usize> {
        self.src
            .lines()
            .position(|l| l.contains(text))
            .map(|n| n + 1)
    }

    pub fn line(&self, key: &str, entity: Option<&str>) -> Option<usize> {
        let last = key.rsplit('.').next().unwrap_or(key);
        let last = last.split('[').next().unwrap_or(last);
        let lines: Vec<&str> = self.src.lines().collect();
        let start = entity
            .and_then(|e| lines.iter().position(|l| l.contains(e)))
            .unwrap_or(0);
        let needle = format!("{last}:");
        lines[start..]
            .iter()
            .position(|l| l.contains(&needle))
            .map(|n| start + n + 1)
            .or_else(|| entity.map(|_| start + 1))
    }
}
