//! The comparison harness (work in progress).

fn main() {
    eprintln!("annal-compare: the comparison harness is being built");
    std::process::exit(1);
}
