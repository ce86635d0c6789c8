// `sqlx::migrate!` embeds core/migrations at compile time, and the SQL
// functions in core/sql/functions are embedded through a list generated
// here (every *.sql file, in name order): adding or changing either must
// rebuild the crate.
use std::fmt::Write as _;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=sql/functions");
    // Read when the script runs, not when it was compiled: a build script
    // compiled in another checkout (a copied target/ directory, which cargo
    // considers fresh) would otherwise embed that checkout's SQL.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&manifest_dir).join("sql/functions");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("core/sql/functions exists")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    let mut list = String::from("&[\n");
    for path in files {
        let name = path.file_stem().expect("a file name").to_string_lossy().into_owned();
        writeln!(list, "    ({name:?}, include_str!({:?})),", path.display().to_string()).expect("writing to a string");
    }
    list.push(']');
    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("sql_functions.rs");
    std::fs::write(out, list).expect("writing the SQL function list");
}
