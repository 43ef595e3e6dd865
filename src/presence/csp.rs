//! Letting the injected inline script past the app's Content-Security-Policy headers.
//!
//! The least intrusive way wins: a policy that allows inline scripts is left alone; a policy
//! that uses a nonce lends it to our tag (no header change); any other policy that would block
//! the script gets the script's `'sha256-…'` added to the directive that governs inline
//! `<script>` elements. A nonce is never invented: the hash is precomputed, works with
//! `'strict-dynamic'`, and keeps responses cacheable. Adding a hash or nonce to a policy that
//! relied on `'unsafe-inline'` would switch that keyword off for the app's own scripts, so
//! such policies are never touched.
//!
//! Policies in `<meta http-equiv>` tags are not rewritten (documented in the README).

/// The CSP source (`'sha256-…'`) that allows an inline element whose text is `text`.
pub fn source_hash(text: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(d)
    )
}

/// What the injector needs to know from the response's CSP headers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CspPlan {
    /// A nonce of the page to put on our tag.
    pub nonce: Option<String>,
    /// Header values to replace, in order, when some policy needed our hash. `None`: keep.
    pub enforce: Option<Vec<String>>,
    pub report_only: Option<Vec<String>>,
}

/// Plans for `Content-Security-Policy` (`enforce`) and `…-Report-Only` values.
pub fn plan(enforce: &[&str], report_only: &[&str], hash: &str) -> CspPlan {
    let nonce = enforce
        .iter()
        .chain(report_only)
        .flat_map(|v| policies(v))
        .find_map(|p| {
            let d = governing(&p)?;
            (!allows_inline(d)).then(|| nonce_of(d)).flatten()
        });
    let rewrite = |values: &[&str]| -> Option<Vec<String>> {
        let out: Vec<(String, bool)> = values
            .iter()
            .map(|v| rewrite_value(v, nonce.as_deref(), hash))
            .collect();
        out.iter()
            .any(|(_, changed)| *changed)
            .then(|| out.into_iter().map(|(v, _)| v).collect())
    };
    CspPlan {
        enforce: rewrite(enforce),
        report_only: rewrite(report_only),
        nonce,
    }
}

/// One header value may hold several policies separated by commas; each is enforced.
fn policies(value: &str) -> impl Iterator<Item = Vec<Directive<'_>>> {
    value.split(',').map(|p| {
        p.split(';')
            .filter_map(|d| {
                let mut tokens = d.split_ascii_whitespace();
                let name = tokens.next()?;
                Some(Directive {
                    name,
                    sources: tokens.collect(),
                })
            })
            .collect()
    })
}

#[derive(Debug)]
struct Directive<'a> {
    name: &'a str,
    sources: Vec<&'a str>,
}

const GOVERNING: [&str; 3] = ["script-src-elem", "script-src", "default-src"];

/// The directive a browser checks for an inline `<script>` element: the first present of
/// `script-src-elem`, `script-src`, `default-src` (the first occurrence of a name counts).
fn governing<'p, 'a>(policy: &'p [Directive<'a>]) -> Option<&'p Directive<'a>> {
    governing_index(policy).map(|i| &policy[i])
}

fn governing_index(policy: &[Directive<'_>]) -> Option<usize> {
    GOVERNING.iter().find_map(|want| {
        policy
            .iter()
            .position(|d| d.name.eq_ignore_ascii_case(want))
    })
}

fn keyword(s: &str, kw: &str) -> bool {
    s.eq_ignore_ascii_case(kw)
}

fn is_nonce_or_hash(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    ["'nonce-", "'sha256-", "'sha384-", "'sha512-"]
        .iter()
        .any(|p| l.starts_with(p))
}

/// `'unsafe-inline'` counts only when no nonce, hash or `'strict-dynamic'` cancels it.
fn allows_inline(d: &Directive<'_>) -> bool {
    d.sources.iter().any(|s| keyword(s, "'unsafe-inline'"))
        && !d
            .sources
            .iter()
            .any(|s| is_nonce_or_hash(s) || keyword(s, "'strict-dynamic'"))
}

fn nonce_of(d: &Directive<'_>) -> Option<String> {
    d.sources.iter().find_map(|s| {
        let l = s.get(..7)?;
        let v = s.get(7..)?.strip_suffix('\'')?;
        let ok = l.eq_ignore_ascii_case("'nonce-")
            && !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=-_".contains(&b));
        ok.then(|| v.to_string())
    })
}

fn accepts_nonce(d: &Directive<'_>, nonce: Option<&str>) -> bool {
    let Some(n) = nonce else { return false };
    d.sources.iter().any(|s| {
        s.len() == n.len() + 8
            && s[..7].eq_ignore_ascii_case("'nonce-")
            && &s[7..s.len() - 1] == n
            && s.ends_with('\'')
    })
}

/// Rewrites the policies of one header value that would block our tag; `true` if any changed.
fn rewrite_value(value: &str, nonce: Option<&str>, hash: &str) -> (String, bool) {
    let mut changed = false;
    let out: Vec<String> = value
        .split(',')
        .map(|raw| {
            let policy: Vec<Directive<'_>> = policies(raw).next().unwrap_or_default();
            let Some(gi) = governing_index(&policy) else {
                return raw.trim().to_string();
            };
            let d = &policy[gi];
            if allows_inline(d) || accepts_nonce(d, nonce) {
                return raw.trim().to_string();
            }
            changed = true;
            let with_hash = |d: &Directive<'_>| -> String {
                // `'none'` must stand alone: drop it rather than contradict it.
                let mut s: Vec<&str> = d
                    .sources
                    .iter()
                    .copied()
                    .filter(|s| !keyword(s, "'none'"))
                    .collect();
                s.push(hash);
                s.join(" ")
            };
            let is_default = d.name.eq_ignore_ascii_case("default-src");
            let mut parts: Vec<String> = policy
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    if i == gi && !is_default {
                        format!("{} {}", x.name, with_hash(x))
                    } else if x.sources.is_empty() {
                        x.name.to_string()
                    } else {
                        format!("{} {}", x.name, x.sources.join(" "))
                    }
                })
                .collect();
            if is_default {
                // Only scripts may gain the hash: a new `script-src` with default-src's list.
                parts.push(format!("script-src {}", with_hash(d)));
            }
            parts.join("; ")
        })
        .collect();
    (out.join(", "), changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "'sha256-abc='";

    fn one(v: &str) -> CspPlan {
        plan(&[v], &[], H)
    }

    #[test]
    fn no_policy_or_inline_allowed_changes_nothing() {
        assert_eq!(plan(&[], &[], H), CspPlan::default());
        assert_eq!(one("img-src 'self'"), CspPlan::default());
        assert_eq!(
            one("default-src 'self'; script-src 'self' 'unsafe-inline'"),
            CspPlan::default()
        );
        assert_eq!(one("frame-ancestors 'none'"), CspPlan::default());
    }

    #[test]
    fn the_pages_nonce_is_lent_to_the_tag() {
        let p = one("script-src 'nonce-r4nd0m+/=' 'strict-dynamic'; object-src 'none'");
        assert_eq!(p.nonce.as_deref(), Some("r4nd0m+/="));
        assert_eq!(p.enforce, None);
        // A nonce with characters outside base64 is not trusted to go into an attribute.
        let p = one("script-src 'nonce-a\"b'");
        assert_eq!(p.nonce, None);
        assert!(p.enforce.is_some());
    }

    #[test]
    fn blocking_script_src_gains_the_hash() {
        let p = one("default-src 'self'; script-src 'self' https://cdn.example");
        assert_eq!(p.nonce, None);
        assert_eq!(
            p.enforce.unwrap(),
            vec![format!(
                "default-src 'self'; script-src 'self' https://cdn.example {H}"
            )]
        );
    }

    #[test]
    fn default_src_only_gets_a_script_src_with_its_list() {
        let p = one("default-src 'self'; img-src *");
        assert_eq!(
            p.enforce.unwrap(),
            vec![format!(
                "default-src 'self'; img-src *; script-src 'self' {H}"
            )]
        );
        let p = one("default-src 'none'");
        assert_eq!(
            p.enforce.unwrap(),
            vec![format!("default-src 'none'; script-src {H}")]
        );
    }

    #[test]
    fn script_src_elem_governs_before_script_src() {
        let p = one("script-src 'unsafe-inline'; script-src-elem 'self'");
        assert_eq!(
            p.enforce.unwrap(),
            vec![format!(
                "script-src 'unsafe-inline'; script-src-elem 'self' {H}"
            )]
        );
    }

    #[test]
    fn unsafe_inline_cancelled_by_a_hash_still_needs_ours() {
        let p = one("script-src 'unsafe-inline' 'sha256-other='");
        assert_eq!(
            p.enforce.unwrap(),
            vec![format!("script-src 'unsafe-inline' 'sha256-other=' {H}")]
        );
    }

    #[test]
    fn every_policy_must_pass_and_report_only_too() {
        // Two policies in one header, one with a nonce: the nonce goes on the tag and the
        // other policy gets the hash.
        let p = plan(
            &["script-src 'nonce-n1', script-src 'self'"],
            &["script-src 'self'"],
            H,
        );
        assert_eq!(p.nonce.as_deref(), Some("n1"));
        assert_eq!(
            p.enforce.unwrap(),
            vec![format!("script-src 'nonce-n1', script-src 'self' {H}")]
        );
        assert_eq!(
            p.report_only.unwrap(),
            vec![format!("script-src 'self' {H}")]
        );
    }

    #[test]
    fn directive_names_are_case_insensitive() {
        let p = one("Script-Src 'NONCE-abc'");
        assert_eq!(p.nonce.as_deref(), Some("abc"));
        assert_eq!(p.enforce, None);
    }
}
