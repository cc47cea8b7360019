//! Project automation for cpc-sync (`cargo xtask <command>`).

fn main() {
    eprintln!(
        "usage: cargo xtask <simulate|bench|crash|ci> (commands arrive with the xtask issue)"
    );
    std::process::exit(2);
}
