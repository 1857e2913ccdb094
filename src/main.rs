//! The `czctl` binary: parse arguments and hand over to the library.

use clap::Parser;

fn main() {
    let _cli = czctl::cli::Cli::parse();
}
