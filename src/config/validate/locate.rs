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

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "products:
  - name: crm
    login: { path: /login }
    session:
      activity:
        ignore:
          - { path_prefix: /logout/all }
          - { path_prefix: /logout }
  - name: erp
    login: { path: /erp/login }
";
    const LOC: Locator = Locator { src: SRC };

    #[test]
    fn a_key_is_found_below_its_entity() {
        assert_eq!(LOC.line("products[1].login.path", Some("erp")), Some(10));
        assert_eq!(LOC.line("products[0].login.path", Some("crm")), Some(3));
        // A key not in the file: the entity's own line; without an entity, nothing.
        assert_eq!(LOC.line("products[1].seats", Some("erp")), Some(9));
        assert_eq!(LOC.line("products[1].seats", None), None);
        let e = LOC.invalid("products[1].login.path", Some("erp"), "why");
        assert_eq!(e.to_string(), "products[1].login.path (line 10): why");
    }

    #[test]
    fn a_value_is_found_whole_below_a_section() {
        assert_eq!(LOC.line_below("crm", "ignore:", "/logout"), Some(8));
        assert_eq!(LOC.line_below("crm", "ignore:", "/logout/all"), Some(7));
        assert_eq!(LOC.line_below("crm", "ignore:", "/nowhere"), None);
        assert_eq!(LOC.line_of("/erp/login"), Some(10));
    }
}
