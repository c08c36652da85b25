//! Phone numbers and text bodies (SPEC §3.12).
//!
//! Numbers are taken only in E.164 (`+15551234567`): a number written with
//! spaces, dashes or a national prefix is refused, not guessed at, because
//! a wrong guess texts a stranger. Suppressions of texts are keyed on this
//! same form, so one number is one suppression.
//!
//! Segments follow GSM 03.38: a body of the GSM-7 alphabet travels in
//! segments of 160 characters (153 when split); anything else is sent as
//! UCS-2, 70 UTF-16 units (67 when split). Written here rather than taken
//! from a crate: the crates that encode PDUs are far larger than the two
//! tables this needs.

/// The number if it is E.164: `+`, then 8 to 15 digits, the first not 0.
pub fn e164(raw: &str) -> Result<&str, String> {
    let digits = raw.strip_prefix('+').unwrap_or("");
    let shaped = (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if shaped {
        Ok(raw)
    } else {
        let shown: String = raw.chars().take(40).collect();
        Err(format!(
            "\"{}\" is not a phone number in E.164 form (a plus, the country code and the number, no spaces: +15551234567)",
            shown.escape_debug()
        ))
    }
}

/// Why a text body cannot be sent, if it cannot: empty, or with control
/// characters other than line breaks and tabs (they garble on handsets and
/// some carriers refuse them).
pub fn body_problem(body: &str) -> Option<String> {
    if body.trim().is_empty() {
        return Some("the text is empty".to_owned());
    }
    let control = body
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'));
    control.map(|c| format!("the text contains the control character U+{:04X}", c as u32))
}

/// The GSM-7 basic alphabet (one septet each).
const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// The GSM-7 extension table (an escape and a septet each).
const GSM_EXTENDED: &str = "^{}\\[~]|€\u{c}";

/// How a body travels: its encoding's name and how many segments it takes.
pub fn segments(body: &str) -> (&'static str, usize) {
    let mut septets = 0usize;
    let gsm = body.chars().all(|c| {
        if GSM_BASIC.contains(c) {
            septets += 1;
            true
        } else if GSM_EXTENDED.contains(c) {
            septets += 2;
            true
        } else {
            false
        }
    });
    let (encoding, units, single, split) = if gsm {
        ("GSM-7", septets, 160, 153)
    } else {
        ("UCS-2", body.encode_utf16().count(), 70, 67)
    };
    let count = if units <= single {
        1
    } else {
        units.div_ceil(split)
    };
    (encoding, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_e164_numbers_are_taken() {
        assert_eq!(e164("+15551234567"), Ok("+15551234567"));
        assert_eq!(e164("+442071838750"), Ok("+442071838750"));
        for bad in [
            "15551234567",
            "+1 555 123 4567",
            "+1-555-123-4567",
            "+1555CALLNOW",
            "+0123456789",
            "+1234567",
            "+1234567890123456",
            "",
            "+",
        ] {
            let why = e164(bad).unwrap_err();
            assert!(why.contains("E.164"), "{bad}: {why}");
        }
    }

    #[test]
    fn bodies_with_control_characters_or_nothing_are_refused() {
        assert_eq!(body_problem("Hi Pat,\n\tsee you"), None);
        assert!(body_problem("  \n").unwrap().contains("empty"));
        assert!(body_problem("bell\u{7}").unwrap().contains("U+0007"));
        assert!(body_problem("esc\u{1b}[31m").unwrap().contains("U+001B"));
    }

    #[test]
    fn segments_follow_the_gsm_alphabet() {
        assert_eq!(segments(&"a".repeat(160)), ("GSM-7", 1));
        assert_eq!(segments(&"a".repeat(161)), ("GSM-7", 2));
        assert_eq!(segments(&"€".repeat(80)), ("GSM-7", 1));
        assert_eq!(segments(&"€".repeat(81)), ("GSM-7", 2));
        assert_eq!(segments(&"ü".repeat(160)), ("GSM-7", 1));
        assert_eq!(segments(&"é".repeat(10)), ("GSM-7", 1));
        assert_eq!(segments(&"ê".repeat(70)), ("UCS-2", 1));
        assert_eq!(segments(&"ê".repeat(71)), ("UCS-2", 2));
        assert_eq!(segments("👋"), ("UCS-2", 1));
    }
}
