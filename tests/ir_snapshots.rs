//! The text IR of every imported fixture is pinned by an insta snapshot, and
//! print → parse → print is the identity on it.

mod common;
use common::*;

#[test]
fn imported_fixtures_print_stably() {
    for path in fixtures() {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let g = ligerc::frontends::onnx::import_onnx(&path).unwrap();
        let text = ligerc::ir::text::print(&g).unwrap();
        let reparsed = ligerc::ir::text::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            ligerc::ir::text::print(&reparsed).unwrap(),
            text,
            "{name}: print ∘ parse is not the identity"
        );
        assert_eq!(
            ligerc::ir::text::print(&g).unwrap(),
            text,
            "{name}: printing twice differs"
        );
        insta::assert_snapshot!(format!("import_{name}"), text);
    }
}

#[test]
fn smollm2_config_graph_prints_stably() {
    // The graph built from SmolLM2's config (weights not needed for the text).
    let (gguf, _) = smollm2();
    let g = ligerc::load_model(&gguf).unwrap().graph;
    let text = ligerc::ir::text::print(&g).unwrap();
    assert_eq!(
        ligerc::ir::text::print(&ligerc::ir::text::parse(&text).unwrap()).unwrap(),
        text
    );
    insta::assert_snapshot!("import_smollm2_gguf", text);
}
