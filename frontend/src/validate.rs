//! Checks on forms before they are sent, so that a visitor learns the rules without a round trip. The
//! server applies the same rules and stays the authority; these only catch the obvious.

/// The sign-up rules in words, shown on the sign-up page.
pub const SIGNUP_RULES: &str = "Your username has 3 to 64 characters: letters, digits, '.', '_' and '-'. Your \
                                password has at least 10 characters.";

const USERNAME_LENGTH: std::ops::RangeInclusive<usize> = 3..=64;
const PASSWORD_MIN_LENGTH: usize = 10;

/// Why `username` cannot be an account's name, if it cannot.
pub fn username_problem(username: &str) -> Option<&'static str> {
    if !USERNAME_LENGTH.contains(&username.chars().count()) {
        return Some("A username has 3 to 64 characters.");
    }
    let allowed = |character: char| character.is_ascii_alphanumeric() || matches!(character, '.' | '_' | '-');
    if !username.chars().all(allowed) {
        return Some("A username may contain only letters, digits, '.', '_' and '-'.");
    }
    None
}

/// Why `password` is too weak for a new account, if it is. Characters, not bytes, are counted: that is
/// what a person counts, and it is never more than the bytes a server might count.
pub fn password_problem(password: &str) -> Option<&'static str> {
    (password.chars().count() < PASSWORD_MIN_LENGTH).then_some("A password has at least 10 characters.")
}

/// The first problem with a sign-up form.
pub fn signup_problem(username: &str, password: &str) -> Option<&'static str> {
    username_problem(username).or_else(|| password_problem(password))
}

/// The first problem with a log-in form. Existing accounts may predate today's rules, so only emptiness
/// is checked here.
pub fn login_problem(username: &str, password: &str) -> Option<&'static str> {
    (username.is_empty() || password.is_empty()).then_some("Enter your username and password.")
}

/// Why an API token cannot be created under `name`, if it cannot.
pub fn token_name_problem(name: &str) -> Option<&'static str> {
    name.trim().is_empty().then_some("Give the token a name, for example the machine that will use it.")
}

/// The origins of a site key as typed on the account page: one per line (or separated by spaces or
/// commas), blanks left out. The server's rules (`protocol::embed::normalize_origins`) then apply.
pub fn typed_origins(text: &str) -> Vec<String> {
    text.split(|character: char| character.is_whitespace() || character == ',')
        .filter(|origin| !origin.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Where to go after signing up or logging in: `next` if it is a path of this site, else the account
/// page. A full URL, `//host` or `/\\host` would make the log-in page an open redirect.
pub fn after_sign_in(next: Option<String>) -> String {
    next.filter(|next| next.starts_with('/') && !next.starts_with("//") && !next.contains('\\'))
        .unwrap_or_else(|| "/account".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_sign_in_goes_only_to_this_sites_pages() {
        assert_eq!(after_sign_in(Some("/submit".to_owned())), "/submit");
        assert_eq!(after_sign_in(Some("/jobs/7?x=1".to_owned())), "/jobs/7?x=1");
        for outside in ["https://evil.example", "//evil.example", "/\\evil.example", "submit", ""] {
            assert_eq!(after_sign_in(Some(outside.to_owned())), "/account", "{outside:?}");
        }
        assert_eq!(after_sign_in(None), "/account");
    }

    #[test]
    fn usernames_follow_the_rules() {
        assert_eq!(username_problem("alice"), None);
        assert_eq!(username_problem("a.b_c-9"), None);
        assert_eq!(username_problem(&"x".repeat(64)), None);
        assert_eq!(username_problem("ab"), Some("A username has 3 to 64 characters."));
        assert_eq!(username_problem(&"x".repeat(65)), Some("A username has 3 to 64 characters."));
        assert_eq!(
            username_problem("alice smith"),
            Some("A username may contain only letters, digits, '.', '_' and '-'.")
        );
        assert!(username_problem("al/ce").is_some());
    }

    #[test]
    fn passwords_need_ten_characters() {
        assert_eq!(password_problem("0123456789"), None);
        assert_eq!(password_problem("012345678"), Some("A password has at least 10 characters."));
        // Ten characters are enough even where they take more bytes.
        assert_eq!(password_problem("éééééééééé"), None);
    }

    #[test]
    fn signup_reports_the_username_first() {
        assert_eq!(signup_problem("ab", "short"), Some("A username has 3 to 64 characters."));
        assert_eq!(signup_problem("alice", "short"), Some("A password has at least 10 characters."));
        assert_eq!(signup_problem("alice", "long enough password"), None);
    }

    #[test]
    fn login_only_needs_both_fields() {
        assert_eq!(login_problem("", "secret"), Some("Enter your username and password."));
        assert_eq!(login_problem("al", ""), Some("Enter your username and password."));
        assert_eq!(login_problem("al", "x"), None);
    }

    #[test]
    fn token_names_are_not_blank() {
        assert!(token_name_problem("  ").is_some());
        assert_eq!(token_name_problem("laptop"), None);
    }

    #[test]
    fn site_origins_are_typed_one_per_line_or_separated() {
        assert_eq!(
            typed_origins("https://a.example\n\n http://b.example, https://c.example "),
            ["https://a.example", "http://b.example", "https://c.example"]
        );
        assert!(typed_origins("  \n ").is_empty());
    }
}
