//! Test support: documentation sections generated from the code, and the check that the
//! committed docs still carry them.

/// Asserts that `doc` holds `expected` (which starts with `begin` and ends with `end`)
/// verbatim, naming the doc file to regenerate otherwise.
pub fn assert_generated_section(doc_name: &str, doc: &str, begin: &str, end: &str, expected: &str) {
    let found = doc.find(begin).and_then(|start| {
        doc[start..]
            .find(end)
            .map(|len| &doc[start..start + len + end.len()])
    });
    assert!(
        found == Some(expected),
        "{doc_name} is out of date; replace its generated section with:\n{expected}\n"
    );
}
