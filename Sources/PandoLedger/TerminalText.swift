import Foundation

/// Text from logs made fit for a terminal. Audit logs are printed before (or without)
/// being verified and a school's log is not signed at all, so anything read from them may
/// carry escape sequences that repaint the screen (a fake `VERIFIED`) or bidi controls
/// that reorder what is shown.
public enum TerminalText {
    /// True for the characters a terminal acts on or that change how a line reads: C0
    /// controls, DEL and C1 controls (category Cc), format characters (Cf: the bidi
    /// embeddings and overrides U+202A–U+202E, the isolates U+2066–U+2069, zero-width
    /// characters), and the line and paragraph separators U+2028/U+2029.
    public static func isUnsafe(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .control, .format, .lineSeparator, .paragraphSeparator: true
        default: false
        }
    }

    /// `text` with every unsafe character written as `\u{…}` and every backslash doubled,
    /// so an escape shown was a character in the log, never text imitating one.
    public static func safe(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            if isUnsafe(scalar) {
                out += "\\u{\(String(scalar.value, radix: 16))}"
            } else if scalar == "\\" {
                out += "\\\\"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}

extension CanonicalJSON {
    /// The encoding with every character `TerminalText.isUnsafe` names written as a JSON
    /// `\uXXXX` escape (a surrogate pair above U+FFFF): the same JSON value, safe to print.
    /// Not canonical; never sign or hash it.
    public var terminalSafeDescription: String {
        var out = ""
        for scalar in description.unicodeScalars {
            guard TerminalText.isUnsafe(scalar) else {
                out.unicodeScalars.append(scalar)
                continue
            }
            for unit in String(scalar).utf16 { out += String(format: "\\u%04x", unit) }
        }
        return out
    }
}
