//! The `annal` command (work in progress).

fn main() {
    eprintln!("annal: the command line is being built");
    std::process::exit(1);
}
