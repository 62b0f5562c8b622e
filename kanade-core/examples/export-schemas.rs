//! Writes the JSON Schema of every wire type to `schemas/<name>.json` at the
//! workspace root (or to the directory given as the first argument).
//!
//! ```text
//! cargo run -p kanade-core --example export-schemas
//! ```

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas"));
    std::fs::create_dir_all(&dir)?;
    let schemas = kanade_core::wire::schema::all_schemas();
    for (name, schema) in &schemas {
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, kanade_core::wire::schema::render(schema))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    println!("wrote {} schemas to {}", schemas.len(), dir.display());
    Ok(())
}
