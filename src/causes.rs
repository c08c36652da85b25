//! Walking an error's chain of causes: finding a cause by its type (so
//! decisions are made by type, never by message text) and writing the
//! whole chain as one sentence for a row or a log line.

/// The first error of type `E` in `e`'s chain, `e` included.
pub fn caused_by<'e, E: std::error::Error + 'static>(
    e: &'e (dyn std::error::Error + 'static),
) -> Option<&'e E> {
    let mut current = Some(e);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<E>() {
            return Some(found);
        }
        current = error.source();
    }
    None
}

/// `e` and each of its causes, joined with `: `.
pub fn chain_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
