//! How browser engines name traps, mapped to the canonical kinds every worker reports.

use distributivecom_protocol::worker::TrapKind;

/// The kind of a trap from the JavaScript error's `name` and `message`, or `None` if it is not a trap the
/// program caused. The messages are V8's (Chromium); other engines' wording is matched loosely.
pub fn trap_kind(name: &str, message: &str) -> Option<TrapKind> {
    if name == "RangeError" && message.contains("call stack") {
        return Some(TrapKind::StackOverflow);
    }
    if name != "RuntimeError" {
        return None;
    }
    let message = message.to_ascii_lowercase();
    let kind = if message.contains("unreachable") {
        TrapKind::Unreachable
    } else if message.contains("memory access out of bounds") || message.contains("out of bounds memory") {
        TrapKind::MemoryOutOfBounds
    } else if message.contains("table index is out of bounds") || message.contains("out of bounds table") {
        TrapKind::TableOutOfBounds
    } else if message.contains("function signature mismatch") || message.contains("null function") {
        TrapKind::BadIndirectCall
    } else if message.contains("divide by zero") || message.contains("remainder by zero") {
        TrapKind::IntegerDivisionByZero
    } else if message.contains("unrepresentable") || message.contains("integer overflow") {
        TrapKind::IntegerOverflow
    } else {
        TrapKind::Other
    };
    Some(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v8_messages_map_to_the_canonical_kinds() {
        let cases = [
            ("RuntimeError", "unreachable", TrapKind::Unreachable),
            ("RuntimeError", "memory access out of bounds", TrapKind::MemoryOutOfBounds),
            ("RuntimeError", "table index is out of bounds", TrapKind::TableOutOfBounds),
            ("RuntimeError", "null function or function signature mismatch", TrapKind::BadIndirectCall),
            ("RuntimeError", "divide by zero", TrapKind::IntegerDivisionByZero),
            ("RuntimeError", "remainder by zero", TrapKind::IntegerDivisionByZero),
            ("RuntimeError", "divide result unrepresentable", TrapKind::IntegerOverflow),
            ("RuntimeError", "float unrepresentable in integer range", TrapKind::IntegerOverflow),
            ("RangeError", "Maximum call stack size exceeded", TrapKind::StackOverflow),
        ];
        for (name, message, kind) in cases {
            assert_eq!(trap_kind(name, message), Some(kind), "{name}: {message}");
        }
        assert_eq!(trap_kind("TypeError", "x is not a function"), None);
    }
}
